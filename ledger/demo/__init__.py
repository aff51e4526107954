"""``ledger demo``: the incident, played on a throwaway broker with deterministic toy models, then
rolled back.
"""
