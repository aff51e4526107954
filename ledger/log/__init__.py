"""The log: where it lives (an external cluster or the embedded broker), its topics, the producer,
and reading it to the end. The only Kafka importer in ``ledger``.
"""
