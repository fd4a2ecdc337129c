"""Alembic migrations of the store (env.py, versions/); shipped with the package so `dbfleet migrate` works when installed."""
