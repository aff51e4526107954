"""Materialisers: consume the ledger topics into DuckDB, exactly once in effect."""
