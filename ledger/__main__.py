"""``python -m ledger`` is the ``ledger`` command."""

from ledger.cli import main

if __name__ == "__main__":
    main()
