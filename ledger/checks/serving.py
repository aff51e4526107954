"""The checks of what serves against the log: each pointer agrees with the model's latest
``DeploymentChanged``, and no set switch was left half done.

A pointer that the log does not record (a crash after the switch, before the event; or a
pointer written by hand) serves something no audit can explain: the log is the truth.
"""

from __future__ import annotations

from pathlib import Path

from ledger.checks.check import Check
from ledger.serving.journal import pending_switch
from ledger.serving.pointers import ServingPointer
from ledger.store import Connection
from ledger.store.queries import latest_deployment


def check_deployed(con: Connection, pointer: ServingPointer) -> Check:
    """The pointer serves the version (and artifact, when the event names one) that the
    log's latest deployment of its model says, per the views on ``con`` (caught up)."""
    m = pointer.model
    found = latest_deployment(con, m)
    figures: dict[str, str | None] = {
        "pointer_version": pointer.version,
        "pointer_artifact": pointer.artifact,
    }
    if not found:
        return Check(
            m,
            "deployed",
            False,
            f"the pointer serves {pointer.version} ({pointer.artifact}) but the log records no "
            f"deployment of {m}: serving was switched outside a rollback; record it by "
            f"rolling back to {pointer.version} (ledger rollback --model {m} --to "
            f"{pointer.version} --yes), or switch back",
            figures,
        )
    version, artifact = found
    figures |= {"log_version": version, "log_artifact": artifact}
    agree = version == pointer.version and artifact in (None, pointer.artifact)
    if agree:
        return Check(
            m, "deployed", True, f"the log's latest deployment of {m} is this one", figures
        )
    logged = f"{version}" + (f" ({artifact})" if artifact else "")
    return Check(
        m,
        "deployed",
        False,
        f"the pointer serves {pointer.version} ({pointer.artifact}) but the log's latest "
        f"deployment of {m} is {logged}: if a rollback to {pointer.version} crashed after its "
        f"switch, run it again to record it (ledger rollback --model {m} --to "
        f"{pointer.version} --yes); if the pointer was changed by hand, switch to what the log "
        f"says (ledger rollback --model {m} --to {version} --yes)",
        figures,
    )


def check_switch_set(home: Path) -> Check:
    """No set switch (several models' pointers as one) was left half done by a crash."""
    pending = pending_switch(home)
    if pending is None:
        return Check("*", "switch", True, "no interrupted switch", {})
    models = " ".join(f"--model {m}" for m in pending.targets)
    return Check(
        "*",
        "switch",
        False,
        f"{pending.describe(home)}; run it again to finish it ("
        + (
            f"ledger rollback {models} --to {pending.to_version} --yes"
            if pending.action == "rollback"
            else f"ledger switch-back {models}"
        )
        + ")",
        {"targets": dict(pending.targets), "behind": pending.behind(home)},
    )
