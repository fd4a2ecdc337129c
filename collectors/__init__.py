"""Collectors: what dbfleet reads from monitored databases and what it concludes.

Owns the collector contract (spec.py), the registry, the engine adapters (engines/) and one
module per concern per engine. Imports nothing from app/: a collector is SQL text plus a pure
transform, so it can be tested on recorded rows without a store or a server. What two engines
share lives in common/ (version keys, index rules, partition maths, the maintenance contract); no
engine package imports another (tests/collectors/test_boundaries.py).
"""
