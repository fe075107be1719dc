"""Fraud detection: per-account features, rules and a trained IsolationForest, combined into
one score with its reasons (DESIGN.md section 10). Pure: no database, no broker; the worker
(``workers/fraud.py``) feeds it movements and stores what it decides."""
