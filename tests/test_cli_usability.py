"""What a new operator meets first: help texts, error messages and text output of
the ``relay`` command, run in-process with click's CliRunner (README, "Command
line"): exit status 2 for a bad argument, ``error:`` in one form, files named by
absolute path, patterns shown as written, no ``None`` and no "1 attempts"."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlmodel import select

from relay.app import Relay
from relay.cli import main
from relay.core.config import RelayConfig
from relay.storage.models import Delivery, DeliveryStatus, Message
from tests.helpers import Parties, Sink, build, send, wait_until
from tests.test_cli import yaml_for

DOMAIN = "ux.example.org"


def write_config(root: Path, extra: str = "") -> Path:
    (root / "filters.yaml").write_text("rules: []\n", encoding="utf-8")
    path = root / "relay.yaml"
    path.write_text(
        f"marketplace: {{domain: {DOMAIN}}}\n"
        'database: {url: "sqlite:///state/relay.db"}\n'
        "archive: {path: state/archive}\n"
        "delivery: {mode: maildir, maildir: state/outbox}\n"
        "dkim: {selector: relay, private_key: keys/relay.key}\n" + extra,
        encoding="utf-8",
    )
    return path


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), prog_name="relay")
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result


def words(text: str) -> str:
    """Help text with click's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path)


# --- dkim keygen --selector -------------------------------------------------------------


def test_keygen_refuses_a_selector_the_relay_does_not_sign_with(config_file: Path) -> None:
    key = config_file.parent / "keys" / "relay.key"
    other = invoke("-c", str(config_file), "dkim", "keygen", "--selector", "s2026")
    assert other.exit_code == 2, other.output
    assert other.stdout == ""  # no record that would never verify
    assert f"set `dkim.selector: s2026` in {config_file} first, or omit --selector" in words(
        other.stderr
    )
    assert "error: Invalid value for '--selector'" in other.stderr
    assert not key.exists()

    same = invoke("-c", str(config_file), "dkim", "keygen", "--selector", "relay", "--json")
    assert same.exit_code == 0, same.output
    assert f'"name": "relay._domainkey.{DOMAIN}"' in same.stdout
    assert key.exists()


# --- bad arguments: exit 2, one form of error ----------------------------------------------


def test_a_malformed_address_is_a_bad_argument(config_file: Path) -> None:
    c = ["-c", str(config_file)]
    cases = [
        [*c, "seller", "add", "--name", "Shop", "--email", "notanemail"],
        [*c, "seller", "update", "1", "--add-email", "a@"],
        [*c, "order", "add", "O-1", "--buyer", "maria at buyer", "--seller", "1"],
        [*c, "buyer", "opt-out", "nobody"],
        [*c, "follower", "add", "--brand", "1", "--email", "@x.example"],
    ]
    for args in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("Usage: relay "), result.stderr
        assert "error: Invalid value for " in result.stderr
        assert "not an email address" in result.stderr
    assert not (config_file.parent / "state").exists()  # refused before the database


def test_click_errors_say_error_as_the_relay_does(config_file: Path) -> None:
    missing = invoke("-c", str(config_file), "seller", "add", "--email", "a@b.example")
    assert missing.exit_code == 2
    assert "error: Missing option '--name'" in missing.stderr
    assert "Error" not in missing.stderr
    unknown = invoke("frobnicate")
    assert unknown.exit_code == 2
    assert "error: No such command 'frobnicate'" in unknown.stderr
    assert "Error" not in unknown.stderr
    no_id = invoke("-c", str(config_file), "archive", "show", "0")
    assert no_id.exit_code == 2
    assert "0 is not in the range of ids" in no_id.stderr
    assert "Error" not in no_id.stderr


# --- help texts ------------------------------------------------------------------------------


def test_id_options_show_a_clean_metavar() -> None:
    for command in (
        ["campaign", "create"],
        ["campaign", "calendar"],
        ["follower", "add"],
        ["order", "add"],
        ["responses"],
    ):
        text = invoke(*command, "--help").stdout
        assert "9223372036854775807" not in text, command
        assert "INTEGER RANGE" not in text, command
    create = invoke("campaign", "create", "--help").stdout
    assert re.search(r"--brand ID\s", create)
    assert re.search(r"--also ID\s", create)
    assert "MESSAGE_ID" in invoke("archive", "show", "--help").stdout  # arguments keep their name


def test_campaign_create_help_says_what_is_required_and_when() -> None:
    text = words(invoke("campaign", "create", "--help").stdout)
    for option in ("--brand ID", "--kind", "--product ID", "--subject TEXT", "--start DATE"):
        at = text.index(option)
        following = text[at : text.index(" --", at + len(option))]
        assert "[required]" in following, (option, following)
    assert "this or --content-file is required" in text
    assert "UTC" in text and "72 hours" in text
    edit = words(invoke("campaign", "edit", "--help").stdout)
    assert "[required]" not in edit  # editing changes what is given, nothing more


def test_promotion_and_event_help_say_whether_the_end_day_counts() -> None:
    promotion = words(invoke("promotion", "add", "--help").stdout)
    assert "that day is NOT included" in promotion
    assert "--end 2026-12-01 runs through 30 November" in promotion
    event = words(invoke("event", "add", "--help").stdout)
    assert "Its last day (YYYY-MM-DD, UTC), included" in event
    assert "both inclusive" in event


def test_dispatch_and_verbose_help_warn() -> None:
    dispatch = words(invoke("campaign", "dispatch", "--help").stdout)
    assert "``" not in dispatch
    assert "Warning: this really sends" in dispatch
    serve = words(invoke("serve", "--help").stdout)
    assert "real addresses of buyers and sellers then reach the log" in serve
    assert "relay reload" in serve


# --- config errors and filter rules ----------------------------------------------------------


def test_config_errors_name_files_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("smtp: {port: x}\n", encoding="utf-8")
    (tmp_path / "norules.yaml").write_text("filters: {rules: none.yaml}\n", encoding="utf-8")
    bad = invoke("-c", "bad.yaml", "check-config")
    assert bad.exit_code == 2
    assert bad.stderr.startswith(f"{tmp_path / 'bad.yaml'}:1: smtp.port: ")
    norules = invoke("-c", "norules.yaml", "check-config")
    assert norules.stderr == (
        f"{tmp_path / 'norules.yaml'}: filters.rules: {tmp_path / 'none.yaml'} does not exist\n"
    )
    default = invoke("archive", "list")
    assert default.exit_code == 2
    assert f"{tmp_path / 'config' / 'relay.yaml'}: file not found" in default.stderr


def test_regex_errors_show_the_pattern_as_written(config_file: Path) -> None:
    (config_file.parent / "filters.yaml").write_text(
        "rules:\n  - id: phone\n    match: {regex: ['(\\d{3}-\\d+']}\n    action: reject\n",
        encoding="utf-8",
    )
    result = invoke("-c", str(config_file), "check-config")
    assert result.exit_code == 2
    assert "invalid regular expression '(\\d{3}-\\d+': missing )" in result.stderr
    assert "\\\\" not in result.stderr


def test_check_config_counts_rules_in_english(config_file: Path) -> None:
    (config_file.parent / "filters.yaml").write_text(
        "rules:\n  - id: x\n    match: {keywords: [promo]}\n    action: flag\n", encoding="utf-8"
    )
    result = invoke("-c", str(config_file), "check-config")
    assert result.stdout == f"{config_file}: OK (1 filter rule)\n", result.output


# --- text output: no None, proper plurals ----------------------------------------------------


async def test_text_output_shows_missing_values_and_counts_properly(
    relay: Relay, sink: Sink, parties: Parties, config: RelayConfig, tmp_path: Path
) -> None:
    cli_config = str(yaml_for(config, tmp_path))
    msg = build(frm=parties.buyer, to=parties.seller_token, subject="One attempt")
    del msg["Message-ID"]  # no original Message-ID: a missing value to show
    await send(relay, msg, sender=parties.buyer, recipients=[parties.seller_token])
    await sink.wait_for(1)

    def delivered() -> bool:
        rows = relay.db.call(lambda s: list(s.exec(select(Delivery)).all()))
        return [d.status for d in rows] == [DeliveryStatus.DELIVERED]

    await wait_until(delivered)
    message = relay.db.call(lambda s: s.exec(select(Message)).one())

    def run(*args: str) -> str:
        result = invoke("-c", cli_config, *args)
        assert result.exit_code == 0, result.output
        return result.stdout

    def run_all() -> tuple[str, str, str]:  # one at a time: CliRunner swaps sys.stdout
        return (
            run("archive", "show", str(message.id)),
            run("queue", "list", "--all"),
            run("conversation", str(parties.conversation_id)),
        )

    show, queue, conversation = await asyncio.to_thread(run_all)
    for text in (show, queue, conversation):
        assert "None" not in text and "False" not in text, text
    lines = show.splitlines()
    assert "original_message_id: -" in lines
    assert "status_reason: -" in lines
    assert re.search(r"^delivery \d+ to .*: delivered, 1 attempt$", show, re.MULTILINE), show
    assert re.search(r" delivered  attempts 1  next -  \S", queue), queue
    assert re.search(r"^buyer_initiated: (yes|no)$", conversation, re.MULTILINE), conversation
