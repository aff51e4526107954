"""A mistyped topic prefix is an error, not an empty, healthy-looking ledger."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ledger.cli import cli
from ledger.contract.events import Topics

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize(
    "command", [("status",), ("consume", "--no-group", "--until-caught-up"), ("consume",)]
)
def test_topics_that_do_not_exist_are_exit_code_2_with_a_hint(bootstrap, topics, tmp_path, command):
    typo = Topics(prefix=f"{topics.prefix}x")  # the real topics exist, these do not
    result = CliRunner().invoke(
        cli,
        ["--bootstrap", bootstrap, "--home", str(tmp_path), "--topic-prefix", typo.prefix]
        + list(command),
    )
    assert result.exit_code == 2, result.output
    assert (
        f"Error: topic {typo.models} does not exist on the broker (check --topic-prefix, "
        "or create the topics with `ledger init`)"
    ) in result.output
    assert "Traceback" not in result.output
