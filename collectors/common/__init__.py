"""What every engine family shares: the version-key lookup, row helpers, statement baselines,
index-redundancy rules, partition maths and the partition-maintenance contract.

Imports only collectors.spec, collectors.engines.base (Target, redact) and the standard library,
never an engine package (collectors.postgres, mysql, sqlserver, oracle): engines build on it, not
the other way round.
"""
