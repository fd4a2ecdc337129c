"""Alembic revisions of the store schema, one file each, in order."""
