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
    m, version = pointer.model, pointer.version
    found = latest_deployment(con, m)
    figures: dict[str, str | None] = {
        "pointer_version": version,
        "pointer_artifact": pointer.artifact,
    }
    record = f"ledger rollback --model {m} --to {version} --yes"
    if not found:
        return Check(
            m,
            "deployed",
            False,
            f"the pointer serves {version} ({pointer.artifact}) but the log records no "
            f"deployment of {m}: serving was switched outside a rollback; a rollback to "
            f"{version} records it",
            figures,
            cli_hint=record,
        )
    logged_version, artifact = found
    figures |= {"log_version": logged_version, "log_artifact": artifact}
    if logged_version == version and artifact in (None, pointer.artifact):
        return Check(m, "deployed", True, f"the log's latest deployment of {m} is this", figures)
    logged = logged_version + (f" ({artifact})" if artifact else "")
    return Check(
        m,
        "deployed",
        False,
        f"the pointer serves {version} ({pointer.artifact}) but the log's latest deployment "
        f"of {m} is {logged}: if a rollback to {version} crashed after its switch, running it "
        f"again records it; if the pointer was changed by hand, roll back to {logged_version}",
        figures,
        cli_hint=f"{record}   # or: ledger rollback --model {m} --to {logged_version} --yes",
    )


def check_switch_set(home: Path) -> Check:
    """No set switch (several models' pointers as one) was left half done by a crash."""
    pending = pending_switch(home)
    if pending is None:
        return Check("*", "switch", True, "no interrupted switch", {})
    models = " ".join(f"--model {m}" for m in pending.targets)
    again = (
        f"ledger rollback {models} --to {pending.to_version} --yes"
        if pending.action == "rollback"
        else f"ledger switch-back {models}"
    )
    return Check(
        "*",
        "switch",
        False,
        f"{pending.describe(home)}; running the {pending.action} again finishes it",
        {"targets": dict(pending.targets), "behind": pending.behind(home)},
        cli_hint=again,
    )
