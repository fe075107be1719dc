"""Helpers shared by the tests (not fixtures: those live in the conftest files)."""
