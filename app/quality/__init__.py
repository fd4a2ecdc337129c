"""Data quality checks in the service: stored definitions (config, API, dbt import), the
definition-time refusal of unindexed scans, running checks over the fleet through the normal
findings write path, and the freshness view the API and console share.

Builds on collectors.quality (the model, SQL and verdicts) and the sweep's sessions and
credentials (app/sweep.py); imported by app/api/checks.py, app/quality_cli.py and app/web.
"""
