"""A third party's match kind, installed with pip, used without editing the relay."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relay.app import Relay
from relay.core.config import RelayConfig
from tests.helpers import Parties, Sink, build, send, wait_until

PLUGIN = Path(__file__).parent / "data" / "plugin"
RULES = """\
rules:
  - id: no-shouting
    description: Messages in capital letters
    applies_to: both
    match:
      shouting: {min_words: 3}
    action: reject
    notice: Please do not write in capital letters.
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install`` of the example plugin into a directory of its own."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "src"
    shutil.copytree(PLUGIN, source)
    target = work / "site"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"),
            *("--no-build-isolation", "--target", str(target), str(source)),
        ],
        check=True,
        capture_output=True,
    )
    assert (target / "relay_shouting-1.0.dist-info" / "entry_points.txt").exists()
    return target


def test_check_config_knows_the_plugin_kind(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "filters.yaml").write_text(RULES)
    config_file = tmp_path / "relay.yaml"
    config_file.write_text("database: {url: 'sqlite:///relay.db'}\narchive: {path: archive}\n")
    relay_cmd = Path(sys.executable).parent / "relay"
    env = {**os.environ, "PYTHONPATH": str(installed)}
    ok = subprocess.run(
        [str(relay_cmd), "-c", str(config_file), "check-config"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "(1 filter rule)" in ok.stdout
    without = subprocess.run(
        [str(relay_cmd), "-c", str(config_file), "check-config"],
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert without.returncode == 2
    assert "unknown match kind 'shouting'" in without.stderr


async def test_plugin_rule_applies_end_to_end(
    installed: Path,
    monkeypatch: pytest.MonkeyPatch,
    relay: Relay,
    config: RelayConfig,
    sink: Sink,
    parties: Parties,
) -> None:
    monkeypatch.syspath_prepend(str(installed))
    config.filters.rules.write_text(RULES)
    assert relay.reload_rules() is True
    loud = build(
        frm=parties.buyer,
        to=parties.seller_token,
        subject="where is it",
        body="WHERE IS MY ORDER ALREADY",
    )
    await send(relay, loud, sender=parties.buyer, recipients=[parties.seller_token])
    calm = build(frm=parties.buyer, to=parties.seller_token, subject="hello", body="Any news?")
    await send(relay, calm, sender=parties.buyer, recipients=[parties.seller_token])
    notices = await sink.wait_for(2)
    # The calm message reached the seller; the loud one came back to the buyer.
    assert {r.rcpt_tos[0] for r in notices} == {parties.seller, parties.buyer}
    notice = next(r for r in notices if r.rcpt_tos == [parties.buyer])
    assert "Please do not write in capital letters." in notice.data.decode()

    def rejected() -> bool:
        from relay.storage import archive

        rows = relay.db.call(lambda s: archive.list_messages(s, status="rejected", limit=10))
        return any(h.rule_id == "no-shouting" for r in rows for h in r.hits)

    await wait_until(rejected)
