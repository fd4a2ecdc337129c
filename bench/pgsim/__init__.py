"""A PostgreSQL wire-protocol simulator for scale benchmarks: one listener, many connections,
answers recorded from a real server (record.py). Imports collectors (to record and to replay their
statements) and asyncpg; nothing from app/."""
