"""Typed configuration, validated once at load (SPEC §7).

Every setting has a default so that a fresh checkout runs with no editing.  Paths
in the file are relative to the file's own directory; ``load_config`` returns a
config whose paths (and SQLite URL) are absolute, so nothing downstream needs to
know where the file was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relay.yamlload import ConfigError, describe_validation_error, read_yaml

DEFAULT_CONFIG = Path("config/relay.yaml")

Seconds = Annotated[float, Field(ge=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MarketplaceConfig(_Strict):
    domain: str = "marketplace.example.com"
    name: str = "Example Marketplace"
    buyer_display_format: str = "{name} - {marketplace}"
    """How a buyer is named to sellers; ``{name}`` and ``{marketplace}`` are filled in."""
    notice_sender: str = "mailer-daemon"
    """Local part of the address that bounce-back notices come from."""

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        value = value.strip().rstrip(".").lower()
        if not value or "@" in value or " " in value or "." not in value:
            raise ValueError("must be a domain name such as marketplace.example.com")
        return value

    @field_validator("buyer_display_format")
    @classmethod
    def _format(cls, value: str) -> str:
        try:
            value.format(name="n", marketplace="m")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{name}} and {{marketplace}} may be used ({exc})") from None
        return value


class SmtpConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 2525
    hostname: str = "mx.marketplace.example.com"
    max_message_size: Annotated[int, Field(gt=0)] = 15_000_000
    max_hops: Annotated[int, Field(gt=0)] = 30
    """More ``Received`` headers than this is a mail loop (554 5.4.6)."""
    data_timeout: PositiveSeconds = 300


class DatabaseConfig(_Strict):
    url: str = "sqlite:///../var/relay.db"
    busy_timeout: PositiveSeconds = 10
    """How long a statement waits for a lock before the relay answers 451."""


class ArchiveConfig(_Strict):
    path: Path = Path("../var/archive")
    retention_days: Annotated[int, Field(gt=0)] | None = None


class SmarthostConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1025
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: PositiveSeconds = 60


class RetryConfig(_Strict):
    initial_delay: Seconds = 60
    max_delay: Seconds = 3600
    give_up_after: Seconds = 432_000


class DeliveryConfig(_Strict):
    mode: Literal["maildir", "smtp"] = "maildir"
    maildir: Path = Path("../var/outbox")
    smtp: SmarthostConfig = SmarthostConfig()
    retry: RetryConfig = RetryConfig()
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    poll_interval: PositiveSeconds = 5
    """How often the worker looks for due deliveries besides being woken."""
    claim_timeout: PositiveSeconds = 600
    """A claimed delivery whose worker vanished is taken up again after this."""


class OptoutConfig(_Strict):
    important_tag: str = "[Important]"
    exempt_categories: tuple[str, ...] = ("handmade", "custom", "alcohol")

    @field_validator("important_tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class FiltersConfig(_Strict):
    rules: Path = Path("filters.yaml")
    timeout: PositiveSeconds = 10


class DkimConfig(_Strict):
    enabled: bool = True
    selector: str = "relay"
    private_key: Path = Path("dkim/relay.key")
    ed25519_key: Path | None = None


class RelayConfig(_Strict):
    marketplace: MarketplaceConfig = MarketplaceConfig()
    smtp: SmtpConfig = SmtpConfig()
    database: DatabaseConfig = DatabaseConfig()
    archive: ArchiveConfig = ArchiveConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    optout: OptoutConfig = OptoutConfig()
    filters: FiltersConfig = FiltersConfig()
    dkim: DkimConfig = DkimConfig()

    def resolved(self, base: Path) -> RelayConfig:
        """This config with every relative path made absolute against ``base``."""

        def absolute(path: Path) -> Path:
            return path if path.is_absolute() else (base / path).resolve()

        return self.model_copy(
            update={
                "database": self.database.model_copy(
                    update={"url": _absolute_sqlite_url(self.database.url, base)}
                ),
                "archive": self.archive.model_copy(update={"path": absolute(self.archive.path)}),
                "delivery": self.delivery.model_copy(
                    update={"maildir": absolute(self.delivery.maildir)}
                ),
                "filters": self.filters.model_copy(update={"rules": absolute(self.filters.rules)}),
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
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == "sqlite:///:memory:":
        return url
    rest = url[len(prefix) :]
    if rest.startswith("/"):
        return url
    path, sep, query = rest.partition("?")
    return f"{prefix}{(base / path).resolve()}{sep}{query}"


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """The file to load: ``-c`` wins, then ``RELAY_CONFIG``, then the default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("RELAY_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG


def load_config(path: Path) -> RelayConfig:
    """Load and validate ``path``; raises ConfigError naming file, line and problem."""
    data, node = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: the configuration must be a mapping of sections"])
    try:
        config = RelayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(path, node, exc)) from None
    return config.resolved(path.parent.resolve())
