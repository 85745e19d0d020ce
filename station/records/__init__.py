"""The station's memory: session records, erasure certificates and today's counters.

Everything lives under ``[station] state_dir``: ``records.sqlite3`` (sessions,
their transitions and certificates, hash-chained) and ``station_key.pem`` (the
Ed25519 key that signs certificates and the head of the chain). The station
builds one ``Recorder`` (``station.records.recorder``), which is both its
``Listener`` and its ``CounterSource``.
"""
