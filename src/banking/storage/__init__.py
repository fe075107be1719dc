"""Persistence: tables, migrations, the unit of work and repositories (SQLite and PostgreSQL)."""
