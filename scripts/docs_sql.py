"""Refresh the outputs of the SQL examples in a Markdown file from a ledger home.

Every ```sql block is run read-only (as `ledger sql` runs it) against the home's views,
and the ```text block right after it is replaced by the result table (inserted if
missing). tests/test_docs.py checks every ```sql block of docs/ still runs and that the
header of each documented output matches.

    ledger demo && python scripts/docs_sql.py docs/sql.md            # home: .ledger
    python scripts/docs_sql.py --home demo-home docs/sql.md README.md
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ledger.cli.audit import render_table, sql_views
from ledger.store import read_only_query

BLOCK = re.compile(r"^```sql\n(?P<sql>.*?)^```\n(?:\n?```text\n.*?^```\n)?", re.M | re.S)


def refresh(text: str, home: Path) -> str:
    with sql_views(home) as con:

        def replace(match: re.Match[str]) -> str:
            result = read_only_query(con, match["sql"])
            table = render_table(result.columns, result.rows)
            return f"```sql\n{match['sql']}```\n\n```text\n{table}\n```\n"

        return BLOCK.sub(replace, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--home", type=Path, default=Path(".ledger"))
    args = parser.parse_args()
    for path in args.files:
        path.write_text(refresh(path.read_text(), args.home))
        print(f"refreshed {path}")


if __name__ == "__main__":
    main()
