"""The dbfleet service: store, inventory, sweeps, findings, alerting, REST API and CLI.

May import collectors/ (the other way round is forbidden).
"""
