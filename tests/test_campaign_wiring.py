"""The campaigns reach the layers below them only through ``relay.campaigns.install``.

The queue (``relay.delivery``) and the database (``relay.storage``) do not import
the campaigns, yet every process that migrates must create the campaign tables,
and every process that records deliveries must put a campaign message's fate
on its send.  Each entry point is checked in a fresh Python process, where
nothing a previous test imported or registered can stand in for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect
from sqlmodel import SQLModel

from relay.campaigns import models as campaign_models
from relay.core.config import RelayConfig
from tests.helpers import config_file, make_config, relay_process

REPORT = """
import json, sys
from sqlalchemy import inspect
from relay.delivery.listeners import listener_for
from relay.storage.models import Direction

def report(engine):
    print(json.dumps({
        "tables": sorted(inspect(engine).get_table_names()),
        "listener": repr(listener_for(Direction.CAMPAIGN)),
        "campaigns_imported": "relay.campaigns" in sys.modules,
    }))
"""


def in_fresh_process(code: str, config: Path) -> dict[str, object]:
    """Run ``code`` (which has ``config``, the loaded configuration, and ends by
    calling ``report(engine)``) in a new interpreter; what it reported."""
    script = REPORT + "\nfrom pathlib import Path\nfrom relay.core.config import load_config\n"
    script += f"config = load_config(Path({str(config)!r}))\n" + code
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def fresh_config(tmp_path: Path) -> tuple[RelayConfig, Path]:
    config = make_config(tmp_path, sink_port=9)  # nothing is delivered
    return config, config_file(config, tmp_path / "relay.yaml")


def every_table() -> list[str]:
    """All the relay's tables: this process has imported every package."""
    return sorted(SQLModel.metadata.tables)


def campaign_tables() -> set[str]:
    """The tables ``relay.campaigns.models`` defines."""
    return {
        str(getattr(v, "__tablename__"))  # noqa: B009
        for v in vars(campaign_models).values()
        if isinstance(v, type)
        and issubclass(v, SQLModel)
        and v.__module__ == campaign_models.__name__
        and "__table__" in vars(v)
    }


def test_storage_and_delivery_alone_know_nothing_of_the_campaigns(tmp_path: Path) -> None:
    """What the layer rule means at run time: the queue and the database load
    without the campaigns, and migrate only their own tables then."""
    _config, path = fresh_config(tmp_path)
    seen = in_fresh_process(
        "from relay.delivery import outbound, spool\n"
        "from relay.storage.db import Database\n"
        "db = Database(config.database)\n"
        "db.migrate()\n"
        "report(db.engine)\n",
        path,
    )
    assert seen["campaigns_imported"] is False
    assert seen["listener"] == "None"
    tables = set(seen["tables"])  # type: ignore[call-overload]
    assert campaign_tables() and not tables & campaign_tables()
    assert "delivery" in tables and "schema_version" in tables


def test_a_relay_in_a_fresh_process_migrates_every_table_and_listens(tmp_path: Path) -> None:
    """``Relay``: what ``relay serve`` runs, in one process or in each worker."""
    _config, path = fresh_config(tmp_path)
    seen = in_fresh_process(
        "from relay.app import Relay\n"
        "relay = Relay(config)\n"
        "relay.db.migrate()\n"
        "report(relay.db.engine)\n",
        path,
    )
    assert seen["tables"] == every_table()
    assert seen["listener"] == "LedgerListener()"


def test_the_supervisor_migrates_every_table_before_the_workers_fork(tmp_path: Path) -> None:
    """``relay serve --workers N``: the supervisor migrates, and its forked
    workers inherit what it installed (and install it again, as relays)."""
    _config, path = fresh_config(tmp_path)
    seen = in_fresh_process(
        "from relay import supervisor\n"
        "from relay.storage.db import make_engine\n"
        "supervisor._prepare(config)\n"
        "report(make_engine(config.database))\n",
        path,
    )
    assert seen["tables"] == every_table()
    assert seen["listener"] == "LedgerListener()"


def test_a_command_migrates_every_table(tmp_path: Path) -> None:
    """The command line opens (and migrates) the database for any command."""
    config, path = fresh_config(tmp_path)
    listed = relay_process("-c", str(path), "queue", "list", cwd=tmp_path)
    assert listed.code == 0, listed
    engine = create_engine(config.database.url)
    try:
        assert sorted(inspect(engine).get_table_names()) == every_table()
    finally:
        engine.dispose()
