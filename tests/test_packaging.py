"""The event contract travels with the package: a built wheel carries every .avsc file where
``ledger.contract.schemas.schema_dir()`` looks for it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ledger.contract.schemas import EVENT_TYPES, schema_dir

ROOT = Path(__file__).resolve().parent.parent


def test_source_checkout_finds_the_top_level_schemas() -> None:
    assert schema_dir() == ROOT / "schemas"


def test_wheel_carries_the_schemas_inside_the_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("lineage_ledger-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for event_type in EVENT_TYPES:
        packaged = f"ledger/_schemas/{event_type}.avsc"
        assert packaged in names
        assert (
            zipfile.ZipFile(wheel).read(packaged)
            == (ROOT / "schemas" / f"{event_type}.avsc").read_bytes()
        )
    assert "consumers/materialiser.py" in names
