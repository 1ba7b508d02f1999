"""Orders end to end: sizing, the risk gate, idempotent submission, monitoring and reconciliation.

Modules: ``sizing`` (how many shares, at which price), ``risk`` (the gate; every check named in its decision),
``submit`` (idempotency key -> DB row -> broker), ``monitor`` (status/fill sync, timeouts, retry, cleanup,
reconciliation).
"""
