"""Configuration and filter-rule loading (README, docs/filters.md): defaults, path resolution,
and errors that name the file, the line and the problem, never a traceback."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from relay.core.config import RelayConfig, load_config
from relay.core.yamlload import ConfigError
from relay.filters import Action, MessageView, Role, load_rules
from tests.helpers import CliResult, relay_cli

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config" / "relay.yaml"

# The contract's example, verbatim: operators' tooling writes exactly these keys.
CONTRACT_EXAMPLE = """\
marketplace:
  domain: marketplace.example.com
  name: Example Marketplace
smtp:
  host: 127.0.0.1
  port: 2525
  hostname: mx.marketplace.example.com
  max_message_size: 15000000        # bytes, announced with SIZE
database:
  url: sqlite:///../var/relay.db    # or postgresql+psycopg://user@host/db
archive:
  path: ../var/archive
delivery:
  mode: maildir                     # maildir | smtp
  maildir: ../var/outbox
  smtp:
    host: 127.0.0.1
    port: 1025
    starttls: false
  retry:
    initial_delay: 60
    max_delay: 3600
    give_up_after: 432000
optout:
  important_tag: "[Important]"
  exempt_categories: [handmade, custom, alcohol]
filters:
  rules: filters.yaml
dkim:
  selector: relay
  private_key: dkim/relay.key       # RSA-2048; `relay dkim keygen` writes it, and
                                    # `relay serve` creates it on first start if missing
  ed25519_key: null                 # optional second signature (RFC 8463)
"""


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == "\n".join(exc.value.problems)
    return exc.value.problems


# --- loading -------------------------------------------------------------------


def test_shipped_config_loads_with_paths_next_to_it() -> None:
    config = load_config(SHIPPED)
    here = SHIPPED.parent.resolve()
    assert config.marketplace.domain == "marketplace.example.com"
    assert config.smtp.port == 2525
    assert config.database.url == f"sqlite:///{here.parent / 'var' / 'relay.db'}"
    assert config.archive.path == here.parent / "var" / "archive"
    assert config.delivery.mode == "maildir"
    assert config.delivery.maildir == here.parent / "var" / "outbox"
    assert config.filters.rules == here / "filters.yaml"
    assert config.dkim.private_key == here / "dkim" / "relay.key"
    assert config.dkim.ed25519_key is None
    load_rules(config.filters.rules)  # the shipped rules load too


def test_spec_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "etc" / "relay.yaml", CONTRACT_EXAMPLE))
    assert config.delivery.retry.give_up_after == 432000
    assert config.optout.exempt_categories == ("handmade", "custom", "alcohol")
    assert config.optout.important_tag == "[Important]"
    assert config.archive.path == tmp_path / "var" / "archive"


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "etc" / "relay" / "relay.yaml",
        """
database: {url: "sqlite+pysqlite:///state/relay.db?timeout=5"}
archive: {path: ../archive}
delivery: {maildir: out}
filters: {rules: rules/filters.yaml}
dkim: {private_key: keys/relay.key, ed25519_key: keys/relay.ed25519}
""",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../etc/relay/relay.yaml"))
    base = tmp_path / "etc" / "relay"
    assert config.database.url == f"sqlite+pysqlite:///{base / 'state' / 'relay.db'}?timeout=5"
    assert config.archive.path == tmp_path / "etc" / "archive"
    assert config.delivery.maildir == base / "out"
    assert config.filters.rules == base / "rules" / "filters.yaml"
    assert config.dkim.private_key == base / "keys" / "relay.key"
    assert config.dkim.ed25519_key == base / "keys" / "relay.ed25519"


def test_absolute_paths_and_other_databases_are_kept(tmp_path: Path) -> None:
    abs_db = tmp_path / "abs" / "relay.db"
    config = load_config(
        write(
            tmp_path / "relay.yaml",
            f"database: {{url: 'sqlite:///{abs_db}'}}\narchive: {{path: '{tmp_path / 'a'}'}}\n",
        )
    )
    assert config.database.url == f"sqlite:///{abs_db}"
    assert config.archive.path == tmp_path / "a"
    pg = "postgresql+psycopg://relay@db.internal:5432/relay"
    config = load_config(write(tmp_path / "pg.yaml", f"database: {{url: '{pg}'}}\n"))
    assert config.database.url == pg


@pytest.mark.parametrize(
    "text",
    ["", "# nothing but a comment\n", "---\n", "smtp:\ndkim:\n  # selector: x\n"],
    ids=["empty", "comment", "document-marker", "empty-sections"],
)
def test_empty_file_gives_all_defaults(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "relay.yaml", text)
    assert load_config(path) == RelayConfig().resolved(tmp_path)
    config = load_config(path)
    assert config.database.url == f"sqlite:///{tmp_path.parent / 'var' / 'relay.db'}"
    assert config.filters.rules == tmp_path / "filters.yaml"


def test_values_are_normalized(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path / "relay.yaml",
            """
marketplace: {domain: Shop.Example.ORG.}
optout: {exempt_categories: [" Handmade ", ALCOHOL, handmade]}
delivery: {retry: {initial_delay: 0.5}}
""",
        )
    )
    assert config.marketplace.domain == "shop.example.org"
    assert config.optout.exempt_categories == ("handmade", "alcohol")
    assert config.delivery.retry.initial_delay == 0.5


# --- errors: file, line, problem ---------------------------------------------------

BAD_CONFIGS: list[tuple[str, str | bytes, list[str]]] = [
    (
        "yaml-syntax",
        "marketplace:\n  name: ok\n  domain: a: b\n",
        [r":3: invalid YAML: mapping values are not allowed here"],
    ),
    (
        "yaml-unclosed",
        "smtp:\n  port: 25\n  host: [127.0.0.1\n",
        [r":4: invalid YAML: .*\(while parsing a flow sequence started at line 3\)"],
    ),
    ("yaml-tab", "smtp:\n\tport: 1\n", [r":2: invalid YAML: found character '\\t'"]),
    ("yaml-nul", "smtp:\n  port: 1\x00\n", [r":2: invalid YAML: character U\+0000"]),
    (
        "duplicate-key",
        "smtp:\n  port: 1\n  port: 2\n",
        [r":3: duplicate key 'port' \(already given at line 2\)"],
    ),
    (
        "unknown-key",
        "smtp:\n  port: 2525\n  colour: blue\n",
        [r":3: smtp\.colour: unknown setting"],
    ),
    ("unknown-section", "smtpp:\n  port: 1\n", [r":1: smtpp: unknown setting"]),
    ("port-text", 'smtp:\n  port: "abc"\n', [r":2: smtp\.port: .*valid integer"]),
    ("port-range", "smtp:\n  port: 70000\n", [r":2: smtp\.port: .*less than or equal to 65535"]),
    ("port-bool", "smtp:\n  port: true\n", [r":2: smtp\.port: must be a number"]),
    (
        "delivery-mode",
        "delivery:\n  maildir: out\n  mode: pigeon\n",
        [r":3: delivery\.mode: .*'maildir' or 'smtp' \(got 'pigeon'\)"],
    ),
    (
        "domain-spaces",
        "marketplace:\n  domain: not a domain\n",
        [r":2: marketplace\.domain: must be a domain name"],
    ),
    (
        "domain-labels",
        "marketplace:\n  domain: exa_mple..com\n",
        [r":2: marketplace\.domain: must be a domain name"],
    ),
    (
        "domain-address",
        "marketplace:\n  domain: shop@example.com\n",
        [r":2: marketplace\.domain: must be a domain name"],
    ),
    (
        "display-format",
        "marketplace:\n  buyer_display_format: '{name} <{email}>'\n",
        [r":2: marketplace\.buyer_display_format: only \{name\} and \{marketplace\}"],
    ),
    (
        "display-format-attribute",
        "marketplace:\n  buyer_display_format: '{name.__class__}'\n",
        [r":2: marketplace\.buyer_display_format: only \{name\} and \{marketplace\}"],
    ),
    ("database-url", "database:\n  url: nonsense\n", [r":2: database\.url: not a database URL"]),
    (
        "database-backend",
        "database:\n  url: mysql://u@h/db\n",
        [r":2: database\.url: unsupported database 'mysql'"],
    ),
    (
        "negative-duration",
        "delivery:\n  retry:\n    initial_delay: -1\n",
        [r":3: delivery\.retry\.initial_delay: .*greater than or equal to 0"],
    ),
    (
        "infinite-duration",
        "delivery:\n  retry:\n    give_up_after: .inf\n",
        [r":3: delivery\.retry\.give_up_after: "],
    ),
    (
        "categories-not-list",
        "optout:\n  exempt_categories: handmade\n",
        [r":2: optout\.exempt_categories: must be a list"],
    ),
    (
        "category-not-text",
        "optout:\n  exempt_categories:\n    - handmade\n    - {a: b}\n",
        [r":4: optout\.exempt_categories\[1\]: .*valid string"],
    ),
    ("section-not-mapping", "smtp: 25\n", [r":1: smtp: must be a mapping of settings"]),
    ("empty-path", "archive:\n  path: ''\n", [r":2: archive\.path: must not be empty"]),
    (
        "selector",
        "dkim:\n  selector: my selector\n",
        [r":2: dkim\.selector: 'my selector' is not a valid DKIM selector"],
    ),
    (
        "auth-half",
        "delivery:\n  smtp:\n    username: relay\n",
        [r":2: delivery\.smtp: give both username and password"],
    ),
    ("list", "- smtp\n- dkim\n", [r":1: the configuration must be a mapping of sections"]),
    ("scalar", "hello\n", [r":1: the configuration must be a mapping of sections"]),
    (
        "not-utf8",
        b"marketplace:\n  name: Caf\xe9\n",
        [r":2: not UTF-8 text \(byte 0xe9 cannot be decoded\)"],
    ),
    (
        "alias-bomb",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n"
            for a, b in zip("abcdef", "bcdefg", strict=True)
        ),
        [r":6: invalid YAML: aliases expand to more than"],
    ),
    ("alias-loop", "a: &a [*a]\n", [r":1: invalid YAML: an alias refers to itself"]),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_names_file_line_and_problem(
    tmp_path: Path, text: str | bytes, expected: list[str]
) -> None:
    path = write(tmp_path / "relay.yaml", text)
    problems = problems_of(path)
    assert len(problems) == len(expected), problems
    for problem, pattern in zip(problems, expected, strict=True):
        assert problem.startswith(str(path) + ":"), problem
        assert re.match(re.escape(str(path)) + pattern, problem), (problem, pattern)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "relay.yaml",
        """\
marketplace:
  domain: "not a domain"
smtp:
  port: abc
  colour: blue
delivery:
  mode: pigeon
  retry:
    max_delay: -5
""",
    )
    problems = problems_of(path)
    lines = sorted(int(p.removeprefix(f"{path}:").split(":")[0]) for p in problems)
    assert lines == [2, 4, 5, 7, 9], problems
    assert {p.split(": ")[1] for p in problems} == {
        "marketplace.domain",
        "smtp.port",
        "smtp.colour",
        "delivery.mode",
        "delivery.retry.max_delay",
    }


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: file not found"]
    (tmp_path / "dir.yaml").mkdir()
    assert problems_of(tmp_path / "dir.yaml") == [
        f"{tmp_path / 'dir.yaml'}: is a directory, not a file"
    ]


def test_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "relay.yaml", "\ufeffsmtp:\n  port: 2600\n")
    assert load_config(path).smtp.port == 2600


# --- filter rules ------------------------------------------------------------------


@dataclass(frozen=True)
class Contains:
    """A stand-in match kind: the test registry is passed in, nothing global changes."""

    kind: ClassVar[str] = "contains"
    words: tuple[str, ...]

    def find(self, view: MessageView, /) -> list[str]:
        text = str(view.message.get_content()).lower()
        return [w for w in self.words if w in text]


def contains(value: Any) -> Contains:
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise ValueError("give a list of words")
    return Contains(tuple(w.lower() for w in value))


def broken(value: Any) -> Contains:
    re.compile(str(value))  # re.error is not a ValueError
    return Contains(())


MATCHERS = {"contains": contains, "pattern": broken}


def rules_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_rules(path, matchers=MATCHERS)
    return exc.value.problems


def test_rules_load_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "filters.yaml",
        """\
rules:
  - id: no-promo
    description: marketing
    match: {contains: [SALE, discount]}
    action: reject
    notice: Promotions are not allowed.
  - id: watch
    applies_to: both
    match: {contains: [refund]}
    action: flag
""",
    )
    rules = load_rules(path, matchers=MATCHERS)
    assert [r.id for r in rules.rules] == ["no-promo", "watch"]
    promo, watch = rules.rules
    assert promo.action is Action.REJECT and promo.applies_to == frozenset({Role.SELLER})
    assert promo.notice == "Promotions are not allowed."
    assert promo.matcher == Contains(("sale", "discount"))
    assert watch.action is Action.FLAG and watch.applies_to == frozenset(Role)
    assert rules.source == str(path)


@pytest.mark.parametrize("text", ["", "rules:\n", "rules: []\n"])
def test_no_rules(tmp_path: Path, text: str) -> None:
    assert load_rules(write(tmp_path / "f.yaml", text), matchers=MATCHERS).rules == ()


def test_every_bad_rule_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "filters.yaml",
        """\
rules:
  - id: one
    match: {contains: [sale]}
    action: reject
  - id: one
    match: {contains: [x]}
    action: flag
  - id: typo
    match:
      keywrods: [sale]
    action: reject
  - id: no-action
    match: {contains: [x]}
  - id: bad-action
    match: {contains: [x]}
    action: delete
  - id: bad-value
    match: {contains: sale}
    action: flag
  - id: bad-regex
    match: {pattern: "(unclosed"}
    action: flag
  - id: two-kinds
    match: {contains: [a], pattern: b}
    action: flag
  - just a string
""",
    )
    p = f"{path}:"
    assert rules_problems(path) == [
        f"{p}5: rules[1].id: duplicate rule id 'one' (first used at line 2)",
        f"{p}10: rules[2].match: unknown match kind 'keywrods' (known: contains, pattern)",
        f"{p}12: rules[3].action: required setting is missing",
        f"{p}16: rules[4].action: Input should be 'reject', 'quarantine', 'strip', 'redact'"
        " or 'flag' (got 'delete')",
        f"{p}18: rules[5].match.contains: give a list of words",
        f"{p}21: rules[6].match.pattern: error: missing ), unterminated subpattern at position 0",
        f"{p}24: rules[7].match: give exactly one match kind (got 2)",
        f"{p}26: rules[8]: must be a mapping of settings",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- id: x\n", ":1: the rules file must be a mapping with a 'rules' list"),
        ("rules: {id: x}\n", ":1: rules: must be a list"),
        ("rule: []\n", ":1: rule: unknown setting"),
        ("rules:\n  - id: x\n    id: y\n", ":3: duplicate key 'id' (already given at line 2)"),
        ("rules: [\n", ":2: invalid YAML: expected the node content"),
    ],
)
def test_bad_rules_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "filters.yaml", text)
    assert rules_problems(path)[0].startswith(f"{path}{expected}")


def test_without_a_registry_every_kind_is_unknown(tmp_path: Path) -> None:
    # The real registry (the relay's kinds and the relay.filters plugins) knows no "zzz".
    path = write(tmp_path / "f.yaml", "rules:\n  - id: a\n    match: {zzz: 1}\n    action: flag\n")
    with pytest.raises(ConfigError) as exc:
        load_rules(path)
    assert exc.value.problems[0].startswith(f"{path}:3: rules[0].match: unknown match kind 'zzz'")


# --- the command: -c, RELAY_CONFIG, check-config -------------------------------------


def relay(*args: str, cwd: Path, env: dict[str, str] | None = None) -> CliResult:
    """``relay ARGS`` in this process, with ``cwd`` as the working directory."""
    result = relay_cli(*args, env=env, cwd=cwd)
    assert "Traceback" not in result.err, result
    return result


def relay_all(calls: Sequence[tuple[Sequence[str], dict[str, str]]], cwd: Path) -> list[CliResult]:
    """Independent invocations, one after the other."""
    return [relay(*args, cwd=cwd, env=env) for args, env in calls]


def good_setup(root: Path) -> Path:
    write(root / "config" / "filters.yaml", "rules: []\n")
    return write(
        root / "config" / "relay.yaml",
        "marketplace: {domain: cli.example.org}\n"
        "database: {url: 'sqlite:///../state/relay.db'}\n"
        "archive: {path: ../state/archive}\n",
    )


def test_check_config_finds_the_file_by_c_env_or_default(tmp_path: Path) -> None:
    good = good_setup(tmp_path)
    bad = write(tmp_path / "bad.yaml", "smtp: {port: nope}\n")
    rel = tmp_path / "config" / "relay.yaml"  # named by its absolute path
    before, after, as_json, env, c_wins, default = relay_all(
        [
            (["-c", str(good), "check-config"], {}),
            (["check-config", "-c", str(good)], {}),
            (["check-config", "--json", "--config", str(good)], {}),
            (["check-config"], {"RELAY_CONFIG": str(good)}),
            (["check-config", "-c", str(good)], {"RELAY_CONFIG": str(bad)}),
            (["check-config"], {}),  # config/relay.yaml under the working directory
        ],
        cwd=tmp_path,
    )
    for r in (before, after, env, c_wins):
        assert (r.code, r.out, r.err) == (0, f"{good}: OK (0 filter rules)\n", ""), r
    assert json.loads(as_json.out) == {"config": str(good), "rules": 0, "ok": True}
    assert (default.code, default.out) == (0, f"{rel}: OK (0 filter rules)\n"), default
    assert not (tmp_path / "state").exists()  # checking touches no database


def test_check_config_reports_every_problem_and_fails(tmp_path: Path) -> None:
    good = good_setup(tmp_path)
    bad = write(
        tmp_path / "bad.yaml",
        "smtp:\n  port: 70000\ndelivery:\n  mode: carrier-pigeon\nmarketplace:\n  domain: x\n",
    )
    broken = write(tmp_path / "broken.yaml", "smtp:\n  port: [25\n")
    latin1 = write(tmp_path / "latin1.yaml", b"marketplace:\n  name: Caf\xe9\n")
    rules = write(
        tmp_path / "config" / "filters.yaml",
        """\
rules:
  - id: promo
    match: {nosuchkind: [sale]}
    action: reject
  - id: promo
    match: {nosuchkind: [x]}
""",
    )
    missing_rules = write(tmp_path / "norules.yaml", "filters: {rules: missing.yaml}\n")
    write(tmp_path / "keys" / "garbage.key", "not a key\n")
    keys = write(
        tmp_path / "keys.yaml",
        "filters: {rules: rules.yaml}\n"
        "dkim: {private_key: keys/garbage.key, ed25519_key: keys/absent.ed25519}\n",
    )
    write(tmp_path / "rules.yaml", "rules: []\n")
    results = relay_all(
        [
            (["check-config", "-c", str(bad)], {}),
            (["-c", str(broken), "check-config"], {}),
            (["-c", str(latin1), "check-config"], {}),
            (["-c", str(good), "check-config"], {}),  # its filters.yaml is the bad one
            (["-c", str(missing_rules), "check-config"], {}),
            (["-c", str(keys), "check-config"], {}),
        ],
        cwd=tmp_path,
    )
    for r in results:
        assert r.code == 2 and r.raw == b"", r
    lines = [r.err.splitlines() for r in results]
    assert lines[0] == [
        f"{bad}:6: marketplace.domain: must be a domain name such as marketplace.example.com",
        f"{bad}:2: smtp.port: Input should be less than or equal to 65535",
        f"{bad}:4: delivery.mode: Input should be 'maildir' or 'smtp' (got 'carrier-pigeon')",
    ]
    assert lines[1] == [
        f"{broken}:3: invalid YAML: expected ',' or ']', but got '<stream end>'"
        " (while parsing a flow sequence started at line 2)"
    ]
    assert lines[2] == [f"{latin1}:2: not UTF-8 text (byte 0xe9 cannot be decoded)"]
    assert lines[3][0].startswith(f"{rules}:3: rules[0].match: unknown match kind 'nosuchkind'")
    assert lines[3][1:] == [
        f"{rules}:5: rules[1].id: duplicate rule id 'promo' (first used at line 2)",
        f"{rules}:5: rules[1].action: required setting is missing",
    ]
    assert lines[4] == [
        f"{missing_rules}: filters.rules: {tmp_path / 'missing.yaml'} does not exist"
    ]
    assert len(lines[5]) == 2, lines[5]
    assert lines[5][0].startswith(
        f"{keys}: dkim.private_key: {tmp_path / 'keys' / 'garbage.key'}: not a PEM private key"
    )
    assert lines[5][1] == (
        f"{keys}: dkim.ed25519_key: {tmp_path / 'keys' / 'absent.ed25519'} does not exist"
        " (relay dkim keygen --ed25519 writes it)"
    )


def test_commands_refuse_a_bad_config_before_doing_anything(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "relay.yaml", "database: {url: 'sqlite:///db.sqlite'}\nsmtp: {port: x}\n"
    )
    results = relay_all(
        [
            (["seller", "add", "--name", "S", "--email", "s@x.example", "-c", str(bad)], {}),
            (["archive", "list"], {"RELAY_CONFIG": str(bad)}),
            (["archive", "list"], {}),  # no config/relay.yaml here
        ],
        cwd=tmp_path,
    )
    for r in results[:2]:
        assert r.code == 2, r
        assert r.err == f"configuration error:\n{bad}:2: smtp.port: " + (
            "Input should be a valid integer, unable to parse string as an integer\n"
        )
    assert results[2].code == 2
    assert results[2].err.splitlines()[1] == f"{tmp_path / 'config/relay.yaml'}: file not found"
    assert not (tmp_path / "db.sqlite").exists()
