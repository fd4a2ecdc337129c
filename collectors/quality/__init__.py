"""Data quality checks on monitored tables: freshness, volume, completeness, assertions, schema.

Owns the declared-check model (checks.py), the read-only SQL each check runs per engine family
(sql.py, identifiers quoted here, user expressions and queries parsed with sqlglot), the pure
verdicts that turn measurements into findings and samples (verdicts.py, baseline.py), the
async steps that run a check on a collector session (run.py), the EXPLAIN review that refuses a
check reading a large table in full (plans.py) and when each check is due (schedule.py).
Imports collectors.spec and collectors.common only: never app/, never an engine package.
"""
