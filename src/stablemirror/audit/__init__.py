"""The tamper-evident audit trail: reading and verifying it, retention checkpoints, reports,
forwarding.

The record (`index/audit_events.py`) and the chain append (`index/audit_chain.py`) live in
`index/`: every index write appends its audit row inside its own transaction.
"""
