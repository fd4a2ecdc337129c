"""What every engine family shares: the version-key lookup, row helpers, statement baselines,
index-redundancy rules, partition maths and the partition-maintenance contract.

Imports only collectors.spec and the standard library, never an engine package
(collectors.postgres, mysql, sqlserver, oracle) nor collectors.engines: engines build on it, not
the other way round.
"""
