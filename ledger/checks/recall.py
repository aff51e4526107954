"""How the recall check runs: the spec (threshold, sample, k) and which Annoy search_k to use.

Annoy's ``search_k`` is the number of tree nodes a query visits. Serving and the recall
check must query with the same value, and there are four ways to choose it, each a named
case here rather than a magic number:

- ``SearchK.calibrate()``: find the smallest search_k (doubling from Annoy's default) that
  reaches the threshold; the rollback records it in the serving pointer;
- ``SearchK.serving()``: the value the serving pointer recorded (what ``verify`` uses);
- ``SearchK.annoy_default()``: Annoy's own default, trees x k;
- ``SearchK.fixed(n)``: exactly ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ledger.errors import ContractError

DEFAULT_RECALL_THRESHOLD = 0.9
DEFAULT_SAMPLE = 200
DEFAULT_K = 10

SearchKMode = Literal["calibrate", "serving", "annoy-default", "fixed"]


@dataclass(frozen=True, slots=True)
class SearchK:
    """Which Annoy search_k a recall check (and serving) queries with.

    Example:
        >>> SearchK.fixed(5000).annoy_value(), SearchK.annoy_default().annoy_value()
        (5000, -1)
    """

    mode: SearchKMode
    value: int | None = None

    def __post_init__(self) -> None:
        if (self.mode == "fixed") != (self.value is not None):
            raise ContractError("only SearchK.fixed carries a value", field="search_k")
        if self.value is not None and self.value < 1:
            raise ContractError(
                f"search_k is a positive number of tree nodes, got {self.value}",
                field="search_k",
                got=str(self.value),
            )

    @classmethod
    def calibrate(cls) -> SearchK:
        return cls("calibrate")

    @classmethod
    def serving(cls) -> SearchK:
        return cls("serving")

    @classmethod
    def annoy_default(cls) -> SearchK:
        return cls("annoy-default")

    @classmethod
    def fixed(cls, n: int) -> SearchK:
        return cls("fixed", n)

    def annoy_value(self) -> int:
        """The number Annoy's API takes (its own convention: -1 is its default)."""
        if self.mode == "fixed" and self.value is not None:
            return self.value
        if self.mode == "annoy-default":
            return -1
        raise ContractError(f"search_k {self.mode!r} has no value until it is resolved")


@dataclass(frozen=True, slots=True)
class RecallSpec:
    """recall@k against exact search on ``sample`` sampled items must reach ``threshold``,
    Annoy queried with ``search_k``.

    Example:
        >>> RecallSpec(threshold=0.95).k
        10
    """

    threshold: float = DEFAULT_RECALL_THRESHOLD
    sample: int = DEFAULT_SAMPLE
    k: int = DEFAULT_K
    search_k: SearchK = SearchK.calibrate()

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ContractError(
                f"a recall threshold is a share in [0, 1], got {self.threshold}",
                field="recall_threshold",
                got=str(self.threshold),
            )
        if self.sample < 0 or self.k < 1:
            raise ContractError(
                f"recall needs sample >= 0 and k >= 1, got sample {self.sample}, k {self.k}",
                field="sample",
            )
