"""The filter rules below the SMTP layer: the rules file's errors, URL finding,
Unicode folding, regular-expression safety, and the schema upgrade for hits.

End-to-end behaviour (what recipients and senders get) is in test_filters_e2e.
"""

from __future__ import annotations

import email
import email.policy
import time
import unicodedata
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from relay.cli import main
from relay.core.yamlload import ConfigError
from relay.filters import Action, Role, evaluate, load_rules
from relay.filters.normalize import fold
from relay.filters.registry import find_factory
from relay.filters.urls import allowed, find_urls, href_host
from relay.storage.db import SCHEMA_VERSION, migrate

BAD_RULES = """\
rules:
  - id: a
    match:
      keywords: {word: [x]}
    action: flag
  - id: b
    match:
      regex: "(unclosed"
    action: flag
  - id: c
    match:
      attachments: {allow: [pdf, spreadsheet], max_total_size: 7 parsecs}
    action: strip
  - id: d
    match:
      attachments: {allow: [pdf]}
    action: redact
  - id: e
    match:
      keywords: [promo]
    action: strip
  - id: f
    match:
      links: {allow: ["http://x.com/"]}
    action: reject
  - id: g
    match:
      header: [{name: X-A, pattern: a}, {name: X-B}]
    action: flag
  - id: h
    match:
      attachments: {}
    action: flag
  - id: i
    match:
      regex: {patterns: ['a'], timeout: 0}
    action: flag
"""

EXPECTED = [
    "4: rules[0].match.keywords.words: required setting is missing",
    "4: rules[0].match.keywords.word: unknown setting",
    "8: rules[1].match.regex: invalid regular expression '(unclosed': missing ) at position 9",
    "12: rules[2].match.attachments.allow: 'spreadsheet' is neither a group"
    " (pdf, word, image, text) nor a MIME type",
    "12: rules[2].match.attachments.max_total_size: '7 parsecs' is not a size"
    " (examples: 7000000, '7MB', '500 KiB')",
    "17: rules[3].action: match kind 'attachments' finds no text to redact:"
    " use reject, quarantine, strip or flag",
    "21: rules[4].action: match kind 'keywords' finds no part to strip (strip removes"
    " attachments and linked images): use reject, quarantine, redact or flag",
    "24: rules[5].match.links: allow: 'http://x.com/' is not a domain name or *.domain",
    "28: rules[6].match.header[1].pattern: required setting is missing",
    "32: rules[7].match.attachments: give 'allow' (types), 'max_total_size' or both",
    "36: rules[8].match.regex.timeout: Input should be greater than 0",
]


def test_every_problem_in_a_rules_file_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "filters.yaml"
    path.write_text(BAD_RULES)
    with pytest.raises(ConfigError) as exc:
        load_rules(path)
    assert exc.value.problems == [f"{path}:{line}" for line in EXPECTED]


def test_check_config_prints_all_the_rules_errors_at_once(tmp_path: Path) -> None:
    (tmp_path / "filters.yaml").write_text(BAD_RULES)
    (tmp_path / "relay.yaml").write_text("database: {url: 'sqlite:///relay.db'}\n")
    result = CliRunner().invoke(main, ["check-config", "-c", str(tmp_path / "relay.yaml")])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines == [f"{tmp_path / 'filters.yaml'}:{line}" for line in EXPECTED]


def test_the_shipped_rules_load(tmp_path: Path) -> None:
    rules = load_rules(Path(__file__).parents[1] / "config" / "filters.yaml")
    ids = [r.id for r in rules.rules]
    assert {"no-marketing", "no-cross-selling", "no-linked-logo", "no-external-links"} <= set(ids)
    assert {"attachment-types", "attachment-size"} <= set(ids)
    by_id = {r.id: r for r in rules.rules}
    assert by_id["no-marketing"].applies_to == {Role.SELLER}
    assert by_id["attachment-types"].applies_to == {Role.SELLER, Role.BUYER}
    # Buyers get the attachment rules only.
    assert [r.id for r in rules.rules if Role.BUYER in r.applies_to] == [
        "attachment-types",
        "attachment-size",
    ]


# --- URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("see HTTP://EVIL.EXAMPLE.COM/x", "evil.example.com"),
        ("see hxxp://evil.example.com", "evil.example.com"),
        ("see hxxps[:]//evil[.]example[.]com/a", "evil.example.com"),
        ("see h**p://evil.com", "evil.com"),
        ("see evil[.]com", "evil.com"),
        ("see evil(.)com for more", "evil.com"),
        ("see evil[dot]com", "evil.com"),
        ("see www.evil.com", "www.evil.com"),
        ("see WWW.Evil.Com/shop", "www.evil.com"),
        ("see mystore.shop today", "mystore.shop"),
        ("see evil\u3002com", "evil.com"),
        ("https://ups.com@evil.com/track", "evil.com"),
        ("http:\\\\evil.com\\x", "evil.com"),
        ("https://evil.com:8443/x", "evil.com"),
        ("xem cửa-hàng.vn nhé", "xn--ca-hng-lta4562d.vn"),
        ("(https://evil.com).", "evil.com"),
    ],
)
def test_urls_and_their_defanged_forms_are_found(text: str, host: str) -> None:
    assert [u.host for u in find_urls(text)] == [host]


@pytest.mark.parametrize(
    "text",
    [
        "write to me at shop@evil.com",  # an address, not a link
        "the file invoice.pdf and setup.py",
        "e.g. this, i.e. that",
        "version 1.2.3",
        "Hà Nội. Cảm ơn bạn",
    ],
)
def test_text_that_is_not_a_link(text: str) -> None:
    assert find_urls(text) == []


def test_url_span_points_at_the_link_for_redaction() -> None:
    text = "Track it at hxxp://evil[.]com/x, thanks."
    (url,) = find_urls(text)
    assert text[url.start : url.end] == "hxxp://evil[.]com/x"


@pytest.mark.parametrize(
    ("href", "host"),
    [
        ("//evil.com/x", "evil.com"),
        ("HtTpS://Evil.com", "evil.com"),
        ("www.evil.com", "www.evil.com"),
        ("mailto:someone@evil.com", None),
        ("tel:+84123", None),
        ("cid:logo@x", None),
        ("#top", None),
        ("page.html", None),
    ],
)
def test_href_hosts(href: str, host: str | None) -> None:
    assert href_host(href) == host


def test_allow_list_wildcards() -> None:
    allow = frozenset({"ups.com", "*.ups.com", "*.ghn.vn"})
    assert allowed("ups.com", allow)
    assert allowed("www.ups.com", allow)
    assert allowed("a.b.ups.com", allow)
    assert allowed("track.ghn.vn", allow)
    assert not allowed("ghn.vn", allow)  # *.x is below x, not x itself
    assert not allowed("ups.com.evil.com", allow)
    assert not allowed("notups.com", allow)


# --- Unicode ---------------------------------------------------------------------


def test_folding_maps_back_to_the_original_text() -> None:
    text = "KHUYE\u0302\u0301N MA\u0303I 20%"  # decomposed, upper case
    folded = fold(text, diacritics=True)
    assert folded.text == "khuyen mai 20%"
    start, end = folded.span(0, len("khuyen mai"))
    assert text[start:end] == "KHUYE\u0302\u0301N MA\u0303I"


@given(st.text(max_size=60))
def test_folding_spans_always_cover_the_original(text: str) -> None:
    for diacritics in (False, True):
        folded = fold(text, diacritics=diacritics)
        for i in range(len(folded.text)):
            start, end = folded.span(i, i + 1)
            assert 0 <= start < end <= len(text)


def _message(body: str, subject: str = "hello") -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def _hits(match: object, message: EmailMessage) -> list[str]:
    from relay.filters.base import Rule, RuleSet

    kind, value = next(iter(match.items()))  # type: ignore[attr-defined]
    factory = find_factory(kind)
    assert factory is not None
    rule = Rule("r", "", frozenset(Role), factory(value), Action.FLAG)
    return [h.detail for h in evaluate(RuleSet((rule,)), message, Role.SELLER).hits]


@pytest.mark.parametrize(
    ("body", "fold_diacritics", "hit"),
    [
        ("Chương trình KHUYẾN MÃI lớn", False, True),
        ("Chương trình khuyen mai lon", False, False),
        ("Chương trình khuyen mai lon", True, True),
        (unicodedata.normalize("NFD", "đợt khuyến mãi"), False, True),
        ("khuyến\u200b mãi", False, True),  # zero-width characters are ignored
        ("khuy\u200bến m\u00ada\u0303i", False, True),  # ...inside words too (soft hyphen)
        ("KHUYẾN\u00a0MÃI", False, True),  # no-break space is white space
        ("khuyến mãiii", False, False),  # whole words only
    ],
)
def test_vietnamese_keywords(body: str, fold_diacritics: bool, hit: bool) -> None:
    match = {"keywords": {"words": ["khuyến mãi"], "fold_diacritics": fold_diacritics}}
    assert bool(_hits(match, _message(body))) is hit


@pytest.mark.parametrize(
    ("body", "hit"),
    [
        ("May DISKWENTO po kami", True),
        ("Gusto naming I-Promote ang bago", True),
        ("\uff50\uff52\uff4f\uff4d\uff4f ngayon", True),  # full-width "promo": NFKC
        ("wholesale prices", False),
        ("SALE today", True),
        ("mga promosyon", True),  # promo* wildcard
    ],
)
def test_tagalog_english_and_compatibility_forms(body: str, hit: bool) -> None:
    match = {"keywords": ["diskwento", "i-promote", "sale", "promo*"]}
    assert bool(_hits(match, _message(body))) is hit


def test_keywords_read_html_as_the_reader_sees_it() -> None:
    msg = EmailMessage()
    msg["Subject"] = "hi"
    msg.set_content("plain part is clean")
    msg.add_alternative("<p>Kh&#117;y&#7871;n <b>m&atilde;i</b></p>", subtype="html")
    hits = _hits({"keywords": ["khuyến mãi"]}, msg)
    assert hits == ['keyword "khuyến mãi": "Khuyến mãi"']


# --- regular expressions: bounded time, fail closed ------------------------------


def test_catastrophic_backtracking_times_out_and_counts_as_a_match() -> None:
    match = {"regex": {"patterns": ["(a+)+$"], "timeout": 0.05}}
    body = "a" * 5000 + "!"
    began = time.monotonic()
    hits = _hits(match, _message(body))
    assert time.monotonic() - began < 2
    assert any("timed out" in h for h in hits)


def test_a_regex_finds_text_in_subject_and_body() -> None:
    match = {"regex": r"\bzalo\s*\d{6,}"}
    assert len(_hits(match, _message("add me on Zalo 0909123456", "ZALO 0909123456"))) == 2


def test_header_patterns_read_decoded_headers() -> None:
    msg = _message("hi")
    msg["X-Campaign"] = "=?utf-8?b?S2h1eeG6v24gbcOjaQ==?="  # "Khuyến mãi", encoded
    match = {"header": {"name": "x-campaign", "pattern": "khuyến"}}
    assert _hits(match, msg) == ["\"Khuyến mãi\" matches 'khuyến'"]


def test_malformed_headers_do_not_break_the_filters() -> None:
    raw = b"From: <<<@@@>>>\r\nTo: ,,,\r\nSubject: =?utf-8?b?!!!?=\r\n\r\nbody www.evil.com\r\n"
    msg = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert _hits({"links": {}}, msg) == ["link to www.evil.com"]
    assert _hits({"header": {"name": "From", "pattern": "@@@"}}, msg)


# --- the archive's schema ---------------------------------------------------------


def test_a_version_1_database_is_brought_up_to_date(tmp_path: Path) -> None:
    """A version-1 schema: no rule_hit.location, no sender or notice index, no trace
    ids, no response marks."""
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    SQLModel.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_message_sender_created"))
        conn.execute(text("DROP INDEX ix_message_about_message_id"))
        conn.execute(text("ALTER TABLE rule_hit DROP COLUMN location"))
        conn.execute(text("ALTER TABLE message DROP COLUMN trace_id"))
        conn.execute(text("DROP TABLE response_mark"))
        conn.execute(text("INSERT INTO schema_version VALUES (1, 1)"))
        conn.execute(
            text(
                "INSERT INTO rule_hit (id, message_id, rule_id, action, detail)"
                " VALUES (1, 1, 'r', 'flag', 'x')"
            )
        )
    migrate(engine)
    assert "location" in {c["name"] for c in inspect(engine).get_columns("rule_hit")}
    assert "trace_id" in {c["name"] for c in inspect(engine).get_columns("message")}
    assert inspect(engine).has_table("response_mark")
    indexes = {i["name"] for i in inspect(engine).get_indexes("message")}
    assert {"ix_message_sender_created", "ix_message_about_message_id"} <= indexes
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_version")).scalar() == SCHEMA_VERSION
        assert conn.execute(text("SELECT location FROM rule_hit")).scalar() == ""
    engine.dispose()
