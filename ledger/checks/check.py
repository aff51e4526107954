"""One verification result, as every check returns it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Check:
    """One verification result: ``detail`` says what was found in the library's terms;
    ``cli_hint``, for a failure that a command repairs, names that command."""

    model: str
    name: str
    passed: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    cli_hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "check": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "figures": self.figures,
            **({"cli_hint": self.cli_hint} if self.cli_hint else {}),
        }


def few(ids: Sequence[str], n: int = 3) -> str:
    return ", ".join(ids[:n]) + (", ..." if len(ids) > n else "")
