"""``ledger doctor``: is this installation healthy, and if not, what to do about it.

Checks, in order (a later check is skipped when what it needs failed):

1. broker: a bootstrap is configured and accepts connections (within a few seconds);
   client: which Kafka client the log stage uses (librdkafka or kafka-python), its version;
2. topics: the three topics exist; ``<prefix>.models`` has exactly one partition (its
   order is the order of deployments);
   history: each topic's retention and cleanup policy (a warning when they bound the
   history: finite retention, or compaction, which on the embeddings topic drops the
   older versions' vectors a rollback rebuilds from);
3. store: the shards of ``home`` open read-only and the views build over them;
4. serving: every serving pointer names an intact artifact of its model and version,
   with the manifest checksum pinned at switch time;
5. dead letters: none pending (a warning: they are kept, not lost);
6. lag: the shards hold every event of the log (a warning: ``ledger consume``).

Each :class:`Finding` says ``ok``, ``warn`` or ``fail`` and, unless ok, how to fix it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ledger.checks.serving import check_deployed, check_switch_set
from ledger.contract.events import Topics
from ledger.errors import BrokerError, LedgerError
from ledger.log.broker import check_reachable, resolve_bootstrap
from ledger.log.clients import ENV_CLIENT, FAST_INSTALL, KAFKA_PYTHON, client_in_use
from ledger.log.topics import topic_configs, topic_partitions
from ledger.serving.open import check_pointer
from ledger.serving.pointers import pointers
from ledger.store import open_views, rows, shard_paths

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome; ``fix`` says what to do when it is not ok."""

    check: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_broker(bootstrap: str | None, home: Path) -> tuple[Finding, str | None]:
    """Finding for the broker, and the reachable bootstrap (None if not)."""
    resolved = resolve_bootstrap(bootstrap, home=home)
    if not resolved:
        return Finding(
            "broker",
            FAIL,
            "no broker configured",
            "pass --bootstrap / set LEDGER_BOOTSTRAP, or run `ledger broker`",
        ), None
    try:
        check_reachable(resolved, timeout=2.0)
    except LedgerError:
        return Finding(
            "broker",
            FAIL,
            f"cannot reach {resolved}",
            "start the broker, or correct --bootstrap / LEDGER_BOOTSTRAP",
        ), None
    return Finding("broker", OK, f"reachable at {resolved}"), resolved


def check_client() -> Finding:
    """The Kafka client in use (:mod:`ledger.log.clients`), its version and why."""
    try:
        info = client_in_use()
    except LedgerError as exc:
        return Finding("client", FAIL, str(exc).split(" (")[0], exc.hint or "")
    detail = f"{info.name} {info.version} (chosen by {info.chosen_by})"
    if info.name == KAFKA_PYTHON and info.chosen_by != f"${ENV_CLIENT}":
        detail += f"; {FAST_INSTALL} for librdkafka, 5-6x faster"
    return Finding("client", OK, detail)


def check_topics(bootstrap: str, topics: Topics) -> Finding:
    """The three topics exist; the models topic has one partition."""
    try:
        existing = topic_partitions(bootstrap)
    except BrokerError as exc:
        return Finding("topics", FAIL, f"cannot read metadata: {exc}", "check the broker")
    missing = [t for t in topics.all if t not in existing]
    if missing:
        return Finding(
            "topics",
            FAIL,
            f"missing: {', '.join(missing)}",
            "run `ledger init` (or check --topic-prefix)",
        )
    parts = {t: existing[t] for t in topics.all}
    if parts[topics.models] != 1:
        return Finding(
            "topics",
            FAIL,
            f"{topics.models} has {parts[topics.models]} partitions",
            "recreate it with one partition: deployments need one order",
        )
    return Finding("topics", OK, ", ".join(f"{t} ({n} partitions)" for t, n in parts.items()))


def _bounds(topic: str, config: dict[str, str], embeddings: str) -> list[str]:
    """What in ``config`` lets the broker drop events of ``topic``, in words."""
    out = []
    if "compact" in config.get("cleanup.policy", "delete"):
        why = (
            ": it keeps one record per entity and drops the older versions' vectors a "
            "rollback rebuilds from"
            if topic == embeddings
            else ": it keeps one record per key"
        )
        out.append(f"{topic} is compacted (cleanup.policy={config['cleanup.policy']}){why}")
    for key in ("retention.ms", "retention.bytes"):
        if config.get(key, "-1") != "-1":
            out.append(f"{topic} has {key}={config[key]}: older events will be deleted")
    return out


def check_history(bootstrap: str, topics: Topics) -> Finding:
    """Each topic's retention and cleanup policy; a warning when they bound the history."""
    try:
        configs = topic_configs(bootstrap, topics.all)
    except BrokerError as exc:
        return Finding("history", WARN, str(exc).splitlines()[0], "check the broker")
    bounds = [b for t in topics.all for b in _bounds(t, configs[t], topics.embeddings)]
    if bounds:
        return Finding(
            "history",
            WARN,
            "; ".join(bounds),
            "set cleanup.policy=delete, retention.ms=-1 and retention.bytes=-1 on these "
            "topics (docs/operations.md); a materialiser behind deleted events stops with "
            "a log-gap error",
        )
    described = [
        ", ".join(f"{k}={v}" for k, v in sorted(configs[t].items())) or "broker defaults"
        for t in topics.all
    ]
    if len(set(described)) == 1:
        return Finding("history", OK, f"every topic: {described[0]}")
    return Finding(
        "history", OK, "; ".join(f"{t}: {d}" for t, d in zip(topics.all, described, strict=True))
    )


def check_store(home: Path) -> tuple[Finding, dict[str, int]]:
    """The shards open read-only; also returns ``{"dead_letters": n}`` for the next check."""
    shards = shard_paths(home)
    if not shards:
        return Finding(
            "store", WARN, f"no shards in {home} yet", "run `ledger consume` (or check --home)"
        ), {}
    try:
        con = open_views(home, timeout=5.0)
        try:
            ((events,),) = rows(con, "SELECT count(*) FROM embeddings")
            ((dead,),) = rows(con, "SELECT count(*) FROM dead_letters WHERE redriven_at IS NULL")
        finally:
            con.close()
    except LedgerError as exc:
        return Finding(
            "store",
            FAIL,
            f"cannot open the shards: {exc}".splitlines()[0],
            "stop the process holding them, or restore the files",
        ), {}
    return (
        Finding("store", OK, f"{len(shards)} shard(s), {events} embedding events"),
        {"dead_letters": int(dead)},
    )


def check_serving(home: Path) -> Finding:
    """Every serving pointer names an intact artifact of its model and version."""
    try:
        found = pointers(home)
    except LedgerError as exc:
        return Finding("serving", FAIL, str(exc), "re-run the rollback to rewrite the pointer")
    if not found:
        return Finding(
            "serving",
            WARN,
            "nothing serves yet",
            "`ledger rollback --model M --to V` builds and switches",
        )
    bad = []
    for p in found:
        try:
            check_pointer(home, p)
        except LedgerError as exc:
            bad.append(f"{p.model}: {exc}")
    if bad:
        return Finding(
            "serving", FAIL, "; ".join(bad), "rebuild: `ledger rollback --model M --to V --yes`"
        )
    return Finding("serving", OK, ", ".join(f"{p.model} {p.version}" for p in found))


def check_deployments(home: Path) -> Finding:
    """No set switch is half done, and every pointer is what the log's latest deployment
    of its model says (a crash after a switch, or a pointer written by hand)."""
    try:
        found = pointers(home)
        with open_views(home, timeout=5.0) as con:
            checks = [check_switch_set(home), *(check_deployed(con, p) for p in found)]
    except LedgerError as exc:
        return Finding("deployments", FAIL, str(exc).splitlines()[0], "restore the state folder")
    failed = [c for c in checks if not c.passed]
    if failed:
        return Finding(
            "deployments",
            FAIL,
            "; ".join(f"{c.model}: {c.detail}" for c in failed),
            "; ".join(c.cli_hint for c in failed if c.cli_hint),
        )
    return Finding("deployments", OK, "every pointer is the log's latest deployment")


def check_lag(bootstrap: str, topics: Topics, home: Path) -> Finding:
    """The shards hold every event of the log."""
    from consumers.lag import lag

    try:
        parts = lag(bootstrap, topics, home)
    except LedgerError as exc:
        return Finding("lag", FAIL, str(exc).splitlines()[0], "check the broker and the shards")
    behind = sum(p.lag for p in parts)
    if any(p.lag < 0 for p in parts):
        return Finding(
            "lag",
            FAIL,
            "the shards hold offsets the log does not have",
            "the broker lost its log: point --home at a fresh folder and re-consume",
        )
    if behind:
        return Finding("lag", WARN, f"{behind} events not materialised yet", "run `ledger consume`")
    return Finding("lag", OK, f"caught up on {len(parts)} partitions")


def doctor(bootstrap: str | None, topics: Topics, home: Path) -> list[Finding]:
    """Run every check of the module docstring; a check whose input failed is skipped.

    Example:
        >>> [f.status for f in doctor(None, Topics(), Path(".ledger"))]  # doctest: +SKIP
        ['ok', 'ok', 'ok', 'ok', 'ok', 'ok']
    """
    broker, reachable = check_broker(bootstrap, home)
    out = [broker, check_client()]
    topics_ok = False
    if reachable:
        out.append(check_topics(reachable, topics))
        topics_ok = out[-1].status == OK
        if topics_ok:
            out.append(check_history(reachable, topics))
    store, figures = check_store(home)
    out.append(store)
    out.append(check_serving(home))
    if store.status == OK:
        out.append(check_deployments(home))
    if "dead_letters" in figures:
        n = figures["dead_letters"]
        out.append(
            Finding("dead letters", OK, "none pending")
            if n == 0
            else Finding(
                "dead letters", WARN, f"{n} pending", "`ledger dlq list`, fix, `ledger dlq redrive`"
            )
        )
    if reachable and topics_ok and store.status == OK:
        out.append(check_lag(reachable, topics, home))
    return out
