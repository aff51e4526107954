"""One module per benchmark of scripts/bench.py."""
