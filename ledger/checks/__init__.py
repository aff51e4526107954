"""The proof that what serves matches the log: exact search, the index and decision checks, and
``verify``.
"""
