"""Gates: the small language an operator writes to gate a promotion on comparison figures
(``agreement>=0.95,overlap>=0.6``), parsed and evaluated."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.errors import GateSpecError

GATE_METRICS: dict[str, str] = {
    "agreement": "decisions: share of subjects decided by both versions that got the same label",
    "overlap": "embeddings: mean share of a sampled entity's k nearest neighbours both agree on",
    "coverage_a": "share of version A's entities (or subjects) that version B also has",
    "coverage_b": "share of version B's entities (or subjects) that version A also has",
}


_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


_GATE = re.compile(r"\s*([A-Za-z_]\w*)\s*(>=|<=|>|<)\s*(\S+)\s*")


_VALID_SPEC = (
    "a gate spec is comma-separated METRIC OP VALUE, e.g. 'agreement>=0.95,overlap>=0.6'; "
    f"metrics: {', '.join(GATE_METRICS)}; operators: {', '.join(_OPERATORS)}; "
    "values are shares in [0, 1]"
)


@dataclass(frozen=True, slots=True)
class Gate:
    """One check, e.g. ``overlap >= 0.6``."""

    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` passes; an unmeasured value (``None``) never does."""
        return value is not None and _OPERATORS[self.op](value, self.threshold)


@dataclass(frozen=True, slots=True)
class GateResult:
    """A gate with the figure it was checked against (``None``: not measured)."""

    gate: Gate
    value: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": str(self.gate),
            "metric": self.gate.metric,
            "op": self.gate.op,
            "threshold": self.gate.threshold,
            "value": self.value,
            "passed": self.passed,
        }


@dataclass(frozen=True, slots=True)
class GateReport:
    """Every gate's result; ``passed`` only when all of them passed."""

    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "gates": [r.to_dict() for r in self.results]}


class HasFigures(Protocol):
    """A comparison: its figures by gate metric."""

    def figures(self) -> dict[str, float | None]: ...


def parse_gates(spec: str) -> tuple[Gate, ...]:
    """Parse ``"agreement>=0.95,overlap>=0.6"`` into gates.

    Raises :class:`~ledger.errors.GateSpecError`, whose message shows a valid spec, for
    an empty spec or part, an unknown metric or operator, or a value outside ``[0, 1]``.

    Example:
        >>> [str(g) for g in parse_gates("agreement >= 0.95, coverage_b>0.5")]
        ['agreement>=0.95', 'coverage_b>0.5']
    """
    if not spec.strip():
        raise GateSpecError(f"empty gate spec; {_VALID_SPEC}", spec=spec)
    gates = []
    for item in spec.split(","):
        gates.append(_parse_gate(spec, item))
    return tuple(gates)


def evaluate_gates(
    gates: str | Sequence[Gate],
    report: HasFigures | Mapping[str, float | None],
) -> GateReport:
    """Check gates against a comparison (or a mapping of gate metric -> figure).

    Example:
        >>> result = evaluate_gates("agreement>=0.95", {"agreement": 0.93})
        >>> result.passed, result.results[0].value
        (False, 0.93)
    """
    parsed = parse_gates(gates) if isinstance(gates, str) else tuple(gates)
    figures = report if isinstance(report, Mapping) else report.figures()
    results = []
    for gate in parsed:
        value = figures.get(gate.metric)
        results.append(GateResult(gate, value, gate.holds(value)))
    return GateReport(tuple(results))


def _parse_gate(spec: str, item: str) -> Gate:
    match = _GATE.fullmatch(item)
    if match is None:
        why = "empty part" if not item.strip() else "expected METRIC OP VALUE"
        raise GateSpecError(
            f"bad gate {item.strip()!r} ({why}); {_VALID_SPEC}", spec=spec, item=item
        )
    metric, op, text = match.groups()
    if metric not in GATE_METRICS:
        raise GateSpecError(f"unknown gate metric {metric!r}; {_VALID_SPEC}", spec=spec, item=item)
    try:
        threshold = float(text)
    except ValueError:
        threshold = math.nan
    # A share outside [0, 1] is a typo ("agreement>=95"), never a real bar.
    if not 0.0 <= threshold <= 1.0:
        raise GateSpecError(
            f"bad gate value {text!r} in {item.strip()!r}; {_VALID_SPEC}", spec=spec, item=item
        )
    return Gate(metric, op, threshold)
