"""Typed configuration, validated once at load (README, "Configuration").

Every setting has a default so that a fresh checkout runs with no editing.  Paths
in the file are relative to the file's own directory; ``load_config`` returns a
config whose paths (and SQLite URL) are absolute, so nothing downstream needs to
know where the file was.
"""

from __future__ import annotations

import ipaddress
import os
import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from relay.core import names
from relay.core.yamlload import ConfigError, StrictModel, describe_validation_error, read_yaml

DEFAULT_CONFIG = Path("config/relay.yaml")

MAX_SECONDS = 10 * 365 * 86400
"""Durations longer than ten years are a typo (and overflow date arithmetic)."""


def _not_bool(value: object) -> object:
    # pydantic's lax mode reads ``port: true`` as 1; a YAML boolean is never a number here.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


def _not_empty_path(value: object) -> object:
    # ``Path("")`` is ".", which would silently mean "the config directory".
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Seconds = Annotated[
    float, BeforeValidator(_not_bool), Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)
]
PositiveSeconds = Annotated[
    float, BeforeValidator(_not_bool), Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)
]
FilePath = Annotated[Path, BeforeValidator(_not_empty_path)]

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


def _domain_name(value: str, *, min_labels: int, example: str) -> str:
    """``value`` lower-cased without a trailing dot; raises ValueError if it is no
    host name (LDH labels of 1-63 characters; internationalized names allowed)."""
    value = value.strip().rstrip(".").lower()
    problem = f"must be a domain name such as {example}"
    try:
        ascii_name = value.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(problem) from None
    labels = ascii_name.split(".")
    if (
        len(labels) < min_labels
        or len(ascii_name) > 253
        or not all(_LABEL.match(label) for label in labels)
    ):
        raise ValueError(problem)
    return value


class MarketplaceConfig(StrictModel):
    domain: str = "marketplace.example.com"
    name: str = "Example Marketplace"
    buyer_display_format: str = "{name} - {marketplace}"
    """How a buyer is named to sellers; ``{name}`` and ``{marketplace}`` are filled in."""
    notice_sender: str = "mailer-daemon"
    """Local part of the address that bounce-back notices come from."""

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return _domain_name(value, min_labels=2, example="marketplace.example.com")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        """The marketplace's name is written into the From of notices and buyers'
        display names: held to the rules of every name a header shows."""
        problem = names.problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value.strip()

    @field_validator("buyer_display_format")
    @classmethod
    def _format(cls, value: str) -> str:
        problem = names.problem(value.replace("{name}", "n").replace("{marketplace}", "m"))
        if problem is not None:
            raise ValueError(problem)
        allowed = "only {name} and {marketplace} may be used"
        try:
            fields = [
                f for _text, f, _spec, _conv in string.Formatter().parse(value) if f is not None
            ]
            value.format(name="n", marketplace="m")
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(f"{allowed} ({exc})") from None
        # "{name.__class__}" formats fine, but attribute access is not a display name.
        bad = [f for f in fields if f not in ("name", "marketplace")]
        if bad:
            raise ValueError(f"{allowed} (found {{{bad[0]}}})")
        return value

    @field_validator("notice_sender")
    @classmethod
    def _local_part(cls, value: str) -> str:
        if not _LOCAL_PART.match(value):
            raise ValueError(
                "must be the local part of an address (before the @), e.g. mailer-daemon"
            )
        return value


class SmtpConfig(StrictModel):
    host: str = "127.0.0.1"
    port: Annotated[Int, Field(ge=0, le=65535)] = 2525
    hostname: str = "mx.marketplace.example.com"
    max_message_size: Annotated[Int, Field(gt=0)] = 15_000_000
    max_hops: Annotated[Int, Field(gt=0)] = 30
    """More ``Received`` headers than this is a mail loop (554 5.4.6)."""
    data_timeout: PositiveSeconds = 300
    """Silence allowed between two reads of a session (a command, a DATA line)."""
    session_timeout: PositiveSeconds = 1800
    """Longest a session may last in all, however busy (a slow drip of bytes)."""
    tls_cert: Path | None = None
    """PEM certificate (chain) for STARTTLS; STARTTLS is offered when it is set."""
    tls_key: Path | None = None
    require_tls: bool = False
    """Refuse MAIL until the client has used STARTTLS (530 5.7.0)."""
    workers: Annotated[Int, Field(ge=1, le=64)] = 1
    """Relay processes on this host, sharing the port (SO_REUSEPORT) and the database."""
    pid_file: FilePath = Path("../var/relay.pid")
    """Where ``relay serve`` writes its pid (locked while it runs), for ``relay reload``."""

    @model_validator(mode="after")
    def _tls(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.require_tls and self.tls_cert is None:
            raise ValueError("require_tls needs tls_cert and tls_key")
        return self

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip() or any(ch.isspace() for ch in value):
            raise ValueError("must be an IP address or a host name")
        return value.strip()

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return _domain_name(value, min_labels=1, example="mx.marketplace.example.com")


class DatabaseConfig(StrictModel):
    url: str = "sqlite:///../var/relay.db"
    busy_timeout: PositiveSeconds = 10
    """How long a statement waits for a lock before the relay answers 451."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                "not a database URL (e.g. sqlite:///relay.db or postgresql+psycopg://user@host/db)"
            ) from None
        backend = url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
        try:
            url.get_dialect().import_dbapi()
        except (ArgumentError, ImportError) as exc:
            raise ValueError(
                f"database driver {url.drivername!r} is not available ({exc})"
            ) from None
        return value


class ArchiveConfig(StrictModel):
    path: FilePath = Path("../var/archive")
    retention_days: Annotated[Int, Field(gt=0)] | None = None


class SmarthostConfig(StrictModel):
    host: str = "127.0.0.1"
    port: Annotated[Int, Field(ge=1, le=65535)] = 1025
    starttls: bool = False
    verify: bool = True
    """Check the smarthost's certificate and name (STARTTLS); off only for testing."""
    ca_file: Path | None = None
    """PEM file of the certificate authorities to trust instead of the system's."""
    username: str | None = None
    password: str | None = None
    timeout: PositiveSeconds = 60

    @model_validator(mode="after")
    def _auth(self) -> Self:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self


class RetryConfig(StrictModel):
    initial_delay: Seconds = 60
    max_delay: Seconds = 3600
    give_up_after: Seconds = 432_000


class DeliveryConfig(StrictModel):
    mode: Literal["maildir", "smtp"] = "maildir"
    maildir: FilePath = Path("../var/outbox")
    smtp: SmarthostConfig = SmarthostConfig()
    retry: RetryConfig = RetryConfig()
    concurrency: Annotated[Int, Field(ge=1, le=256)] = 10
    poll_interval: PositiveSeconds = 5
    """How often the worker looks for due deliveries besides being woken."""
    claim_timeout: PositiveSeconds = 600
    """A claimed delivery whose worker vanished is taken up again after this."""


class OptoutConfig(StrictModel):
    important_tag: str = "[Important]"
    exempt_categories: tuple[str, ...] = ("handmade", "custom", "alcohol")

    @field_validator("important_tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("exempt_categories")
    @classmethod
    def _categories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Orders store categories stripped and lower-cased; compare like with like.
        return tuple(dict.fromkeys(c.strip().lower() for c in value if c.strip()))


class AuthConfig(StrictModel):
    """Inbound sender authentication (relay/authn.py)."""

    policy: Literal["none", "spf", "dkim", "dmarc"] = "none"
    """What mail from a seller or buyer must pass: none (try-it-out default), spf,
    dkim (aligned with From) or dmarc (SPF or DKIM, aligned with From)."""
    dns_timeout: PositiveSeconds = 5
    nameservers: list[str] = Field(default_factory=list)
    """Resolvers to ask ("ip" or "ip:port"); empty: the system's."""

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: list[str]) -> list[str]:
        ports = {split_nameserver(entry)[1] for entry in value}
        if len(ports) > 1:
            raise ValueError("all nameservers must use the same port")
        return value


def split_nameserver(entry: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"`` → (host, port); an IPv6 address takes no port."""
    host, port = entry, "53"
    if entry.count(":") == 1:
        host, port = entry.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{entry!r} is not an IP address (or ip:port)") from None
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{entry!r}: bad port")
    return host, int(port)


class LimitsConfig(StrictModel):
    """Abuse limits (SECURITY.md, "Abuse limits").  Rates per sender and conversation
    are counted in the database, so they hold across processes and restarts;
    connection and guessing limits are per process.

    No limit here refuses mail to a valid recipient because of what someone else
    did from the same address: large providers send the mail of millions of users
    from a few shared IPs (SECURITY.md, "Tokens cannot be guessed")."""

    max_recipients: Annotated[Int, Field(gt=0, le=10_000)] = 100
    max_connections: Annotated[Int, Field(gt=0)] = 200
    """Concurrent SMTP sessions; more get 421 4.7.0."""
    connections_per_ip: Annotated[Int, Field(ge=0)] = 0
    """New sessions per client IP address per minute; 0 is no limit (the default:
    a large provider's outbound MTAs open many sessions from few addresses)."""
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Client networks exempt from the per-IP limits (``connections_per_ip``,
    ``unknown_recipients_per_ip``): an MTA of our own in front of the relay,
    for instance.  Loopback by default."""
    messages_per_sender: Annotated[Int, Field(gt=0)] = 200
    """Messages accepted per envelope sender per hour."""
    messages_per_conversation: Annotated[Int, Field(gt=0)] = 50
    """Messages accepted per conversation and direction per hour."""
    unknown_recipients_per_ip: Annotated[Int, Field(gt=0)] = 20
    """Refused RCPTs (unknown token or wrong sender) per client IP per hour; past
    it, every further refused RCPT from that IP is answered only after
    ``unknown_recipient_delay``.  RCPTs to valid recipients are never slowed."""
    unknown_recipients_soft_limit: Annotated[Int, Field(ge=0)] = 5
    """Refused RCPTs a session may make before each further one is answered late:
    the n-th past this waits n times ``unknown_recipient_delay``."""
    unknown_recipients_hard_limit: Annotated[Int, Field(gt=0)] = 20
    """Refused RCPTs after which the session is answered 421 4.7.0 and closed.
    A message accepted in the session starts both counts again."""
    unknown_recipient_delay: Annotated[
        float, BeforeValidator(_not_bool), Field(ge=0, le=60, allow_inf_nan=False)
    ] = 1.0
    """Seconds by which a refused RCPT past a limit is delayed, per step."""
    max_header_bytes: Annotated[Int, Field(gt=0)] = 262_144
    max_headers: Annotated[Int, Field(gt=0)] = 1000

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_network(entry) for entry in value)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Self:
        if self.unknown_recipients_soft_limit > self.unknown_recipients_hard_limit:
            raise ValueError(
                "unknown_recipients_soft_limit must not exceed unknown_recipients_hard_limit"
            )
        return self


def _network(entry: str) -> str:
    """``entry`` as a network in CIDR notation (an address alone is a /32 or /128);
    raises ValueError naming the entry if it is neither."""
    try:
        loose = ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{entry!r} is not an IP network such as 10.0.0.0/8 or 2001:db8::/32"
        ) from None
    if loose.network_address != ipaddress.ip_address(entry.strip().partition("/")[0]):
        raise ValueError(f"{entry!r} has host bits set; did you mean {loose}?")
    return str(loose)


class FiltersConfig(StrictModel):
    rules: FilePath = Path("filters.yaml")
    timeout: PositiveSeconds = 10


def _listen_address(value: object) -> object:
    """``host:port``, checked; a bare port number means 127.0.0.1."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"127.0.0.1:{value}"
    if value is not None:
        parse_listen(str(value))
    return value


ListenAddress = Annotated[str | None, BeforeValidator(_listen_address)]


class MetricsConfig(StrictModel):
    """The HTTP endpoint for Prometheus (/metrics) and health checks (/healthz)."""

    listen: ListenAddress = None
    """``host:port`` (``[::1]:9125`` for IPv6), or a bare port on 127.0.0.1; off when
    unset.  Anyone who can reach it sees the relay's traffic figures: keep it on
    loopback or a private network."""

    @property
    def address(self) -> tuple[str, int] | None:
        return parse_listen(self.listen) if self.listen is not None else None


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` → (host, port); raises ValueError with an example."""
    host, sep, port_text = value.strip().rpartition(":")
    host = host.strip("[]") if host.startswith("[") else host
    if not sep:
        host, port_text = "127.0.0.1", value.strip()
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
        ipaddress.ip_address(host or "127.0.0.1")
    except ValueError:
        raise ValueError(
            f"{value!r} is not an address to listen on (host:port, e.g. 127.0.0.1:9125)"
        ) from None
    return host or "127.0.0.1", port


def http_base(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class ApiConfig(StrictModel):
    """The marketplace's HTTP API (README, "The HTTP API")."""

    listen: ListenAddress = "127.0.0.1:8080"
    """``host:port`` it answers on; null: off.  Plain HTTP: put it behind the
    marketplace's HTTPS front end, or keep it on loopback or a private network."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    """A request body over this is refused with 413 before it is read whole."""
    requests_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    """Per API key; past it a request gets 429 with Retry-After."""

    @property
    def address(self) -> tuple[str, int] | None:
        return parse_listen(self.listen) if self.listen is not None else None


class WebhooksConfig(StrictModel):
    """Sending webhook events (README, "Webhooks")."""

    dispatch: bool = True
    """Send them from this process (every ``relay serve`` process shares the
    work through leases; ``relay api`` alone never sends)."""
    timeout: PositiveSeconds = 10
    """A receiver that has not answered by then has failed this attempt."""
    first_retry: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 10
    """Seconds from a failed attempt to the next; doubled after each failure."""
    max_retry_delay: PositiveSeconds = 3600
    give_up_after: PositiveSeconds = 259_200
    """From the event on: past this, the delivery is given up and its
    endpoint marked failing (three days)."""
    poll_interval: PositiveSeconds = 1
    """How often the outbox is looked at when nothing is due."""
    concurrency: Annotated[Int, Field(ge=1, le=256)] = 8
    """Deliveries in flight at once, per process."""
    late_check_interval: PositiveSeconds = 60
    """How often buyer messages are checked for ``response.late``."""

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.first_retry > self.max_retry_delay:
            raise ValueError("webhooks.first_retry must not exceed webhooks.max_retry_delay")
        return self


class LoggingConfig(StrictModel):
    format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line, with the structured fields as keys."""
    level: Literal["debug", "info", "warning", "error"] = "info"


class UnsubscribeConfig(StrictModel):
    """The one-click unsubscribe endpoint of campaign messages (RFC 8058)."""

    listen: ListenAddress = "127.0.0.1:8025"
    """``host:port`` the relay serves ``/unsubscribe/...`` on; loopback by default,
    behind the marketplace's HTTPS front end.  ``null``: not served here."""
    url: str | None = None
    """The public base URL of the links in the messages (``https://...``); the
    default is ``http://`` plus ``listen``, for trying it out."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. https://example.com/mail")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _somewhere(self) -> Self:
        if self.listen is None and self.url is None:
            raise ValueError("with listen: null, url must say where unsubscribe links lead")
        return self

    @property
    def address(self) -> tuple[str, int] | None:
        return parse_listen(self.listen) if self.listen is not None else None

    def link(self, token: str) -> str:
        """The unsubscribe URL of one campaign message."""
        if self.url is not None:
            return f"{self.url}/unsubscribe/{token}"
        assert self.address is not None
        return f"{http_base(*self.address)}/unsubscribe/{token}"


class CampaignsConfig(StrictModel):
    """Brand campaigns (``relay.campaigns``)."""

    dispatch: bool = True
    """Run the campaign dispatcher in ``relay serve``."""
    poll_interval: PositiveSeconds = 30
    """How often the dispatcher looks for campaigns to start and messages due."""
    batch: Annotated[Int, Field(gt=0, le=10_000)] = 200
    """Messages the dispatcher renders and queues per database transaction."""
    sender: str = "brands"
    """Local part of the address campaign messages come from (replies are not read)."""
    currency: str = "USD"
    """Shown with ``amount_off`` promotions."""
    store_url: str = "https://{domain}/stores/{brand_id}"
    product_url: str = "https://{domain}/dp/{sku}"
    templates: FilePath | None = None
    """A directory with ``campaign.html`` and ``campaign.txt`` (Jinja2) to use
    instead of the built-in templates."""
    unsubscribe: UnsubscribeConfig = UnsubscribeConfig()

    @field_validator("sender")
    @classmethod
    def _local_part(cls, value: str) -> str:
        if not _LOCAL_PART.match(value):
            raise ValueError("must be the local part of an address (before the @), e.g. brands")
        return value

    @field_validator("store_url", "product_url")
    @classmethod
    def _link_format(cls, value: str, info: Any) -> str:
        allowed = {"store_url": ("domain", "brand_id"), "product_url": ("domain", "sku")}[
            info.field_name
        ]
        try:
            fields = [f for _t, f, _s, _c in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        bad = [f for f in fields if f not in allowed]
        if bad:
            raise ValueError(
                f"only {{{allowed[0]}}} and {{{allowed[1]}}} may be used (found {{{bad[0]}}})"
            )
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value


class DkimConfig(StrictModel):
    enabled: bool = True
    selector: str = "relay"
    private_key: FilePath = Path("dkim/relay.key")
    ed25519_key: FilePath | None = None

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return check_selector(value)


def check_selector(value: str) -> str:
    """A DKIM selector is a DNS name below ``_domainkey`` (RFC 6376 §3.1); raises ValueError."""
    value = value.strip()
    labels = value.lower().split(".")
    if not value.isascii() or not all(_LABEL.match(label) for label in labels):
        raise ValueError(
            f"{value!r} is not a valid DKIM selector (letters, digits and hyphens, e.g. relay)"
        )
    return value


class RelayConfig(StrictModel):
    marketplace: MarketplaceConfig = MarketplaceConfig()
    smtp: SmtpConfig = SmtpConfig()
    database: DatabaseConfig = DatabaseConfig()
    archive: ArchiveConfig = ArchiveConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    optout: OptoutConfig = OptoutConfig()
    filters: FiltersConfig = FiltersConfig()
    limits: LimitsConfig = LimitsConfig()
    auth: AuthConfig = AuthConfig()
    dkim: DkimConfig = DkimConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    campaigns: CampaignsConfig = CampaignsConfig()
    api: ApiConfig = ApiConfig()
    webhooks: WebhooksConfig = WebhooksConfig()

    def with_unsubscribe_url(self, url: str) -> RelayConfig:
        """This config with the unsubscribe links leading to ``url`` (where the
        endpoint really listens: its port, when asked for port 0), unless
        ``campaigns.unsubscribe.url`` names the public address already."""
        if self.campaigns.unsubscribe.url is not None:
            return self
        unsubscribe = self.campaigns.unsubscribe.model_copy(update={"url": url})
        campaigns = self.campaigns.model_copy(update={"unsubscribe": unsubscribe})
        return self.model_copy(update={"campaigns": campaigns})

    def resolved(self, base: Path) -> RelayConfig:
        """This config with every relative path made absolute against ``base``."""

        def absolute(path: Path) -> Path:
            path = path.expanduser()
            return path if path.is_absolute() else (base / path).resolve()

        return self.model_copy(
            update={
                "database": self.database.model_copy(
                    update={"url": _absolute_sqlite_url(self.database.url, base)}
                ),
                "smtp": self.smtp.model_copy(
                    update={
                        "tls_cert": absolute(self.smtp.tls_cert) if self.smtp.tls_cert else None,
                        "tls_key": absolute(self.smtp.tls_key) if self.smtp.tls_key else None,
                        "pid_file": absolute(self.smtp.pid_file),
                    }
                ),
                "archive": self.archive.model_copy(update={"path": absolute(self.archive.path)}),
                "delivery": self.delivery.model_copy(
                    update={
                        "maildir": absolute(self.delivery.maildir),
                        "smtp": self.delivery.smtp.model_copy(
                            update={
                                "ca_file": absolute(self.delivery.smtp.ca_file)
                                if self.delivery.smtp.ca_file
                                else None
                            }
                        ),
                    }
                ),
                "filters": self.filters.model_copy(update={"rules": absolute(self.filters.rules)}),
                "campaigns": self.campaigns.model_copy(
                    update={
                        "templates": absolute(self.campaigns.templates)
                        if self.campaigns.templates
                        else None
                    }
                ),
                "dkim": self.dkim.model_copy(
                    update={
                        "private_key": absolute(self.dkim.private_key),
                        "ed25519_key": (
                            absolute(self.dkim.ed25519_key) if self.dkim.ed25519_key else None
                        ),
                    }
                ),
            }
        )


def _absolute_sqlite_url(url: str, base: Path) -> str:
    """A SQLite URL (any driver) whose file is absolute; other URLs unchanged."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if database.startswith("file:"):
        return url  # a SQLite URI filename: taken as written
    path = Path(database).expanduser()
    if path.is_absolute() and str(path) == database:
        return url
    if not path.is_absolute():
        path = (base / path).resolve()
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """The file to load: ``-c`` wins, then ``RELAY_CONFIG``, then the default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("RELAY_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def load_config(path: Path) -> RelayConfig:
    """Load and validate ``path``; raises ConfigError naming file, line and problem.

    Every problem in the file is reported, not only the first.  The file is
    named by its absolute path, as the paths it holds are once resolved, so that
    every message names files in one form.
    """
    path = path.absolute()
    data, node = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        raise ConfigError(
            [
                f"{path}:{line}: the configuration must be a mapping of sections"
                f" (marketplace:, smtp:, ...), not a {_yaml_kind(data)}"
            ]
        )
    try:
        config = RelayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, node, exc)) from None
    return config.resolved(path.parent.resolve())


def _yaml_kind(data: object) -> str:
    if isinstance(data, list):
        return "list"
    if isinstance(data, str):
        return "string"
    return type(data).__name__
