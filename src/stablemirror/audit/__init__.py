"""The tamper-evident audit trail: hash chain, retention checkpoints, reports, forwarding.

`events` and `chain` are storage-level (the index writes audit rows inside its own
transactions); `log`, `retention`, `report` and `forward` are services over them.
"""
