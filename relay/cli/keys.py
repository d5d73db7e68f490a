"""Keys and certificates: ``relay dkim`` and ``relay tls``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from relay.cli.base import TEXT, CliError, Context, common, emit, handled, main, pass_ctx
from relay.core.config import check_selector
from relay.delivery.dkim_sign import (
    ed25519_selector,
    generate_ed25519_key,
    generate_rsa_key,
    txt_record_name,
)

# --- dkim ------------------------------------------------------------------------


@main.group()
@common
def dkim() -> None:
    """DKIM keys for the marketplace domain."""


@dkim.command("keygen")
@common
@click.option(
    "--selector",
    type=TEXT,
    help="Must be dkim.selector of the configuration, which is what the relay signs"
    " with (the default); to use another, set dkim.selector first.",
)
@click.option("--force", is_flag=True, help="Replace an existing key.")
@click.option(
    "--ed25519",
    "ed25519",
    is_flag=True,
    help="Also write the Ed25519 key named by dkim.ed25519_key.",
)
@pass_ctx
@handled
def dkim_keygen(ctx: Context, selector: str | None, force: bool, ed25519: bool) -> None:
    """Write the DKIM key and print the DNS TXT record to publish.

    The key goes to dkim.private_key and the record is named after
    dkim.selector: the relay signs with that pair.
    """
    config = ctx.config
    try:
        selector = check_selector(selector) if selector is not None else config.dkim.selector
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--selector'") from None
    if selector != config.dkim.selector:
        # A record for another selector would never verify: the relay signs
        # s=<dkim.selector>, with the key this command is about to replace.
        raise click.BadParameter(
            f"the relay signs with dkim.selector {config.dkim.selector!r}, so a key"
            f" published as {selector!r} would never be used: set"
            f" `dkim.selector: {selector}` in {ctx.config_path} first, or omit --selector",
            param_hint="'--selector'",
        )
    domain = config.marketplace.domain
    path: Path = config.dkim.private_key
    ed_path = config.dkim.ed25519_key or path.with_name(path.stem + ".ed25519")
    for existing in [path, ed_path] if ed25519 else [path]:
        if existing.exists() and not force:
            raise CliError(f"{existing} exists; use --force to replace it")
    records = [
        {
            "name": txt_record_name(selector, domain),
            "type": "TXT",
            "value": _write_key(generate_rsa_key, path),
            "key": str(path),
        }
    ]
    if ed25519:
        records.append(
            {
                "name": txt_record_name(ed25519_selector(selector), domain),
                "type": "TXT",
                "value": _write_key(generate_ed25519_key, ed_path),
                "key": str(ed_path),
            }
        )
    emit(
        ctx,
        records if len(records) > 1 else records[0],
        [f"{r['name']}. IN TXT {_zone_strings(r['value'])}" for r in records],
    )
    if ed25519 and config.dkim.ed25519_key is None:
        click.echo(
            f"note: set dkim.ed25519_key: {ed_path} in {ctx.config_path} to sign with Ed25519",
            err=True,
        )
    if not config.dkim.enabled:
        click.echo(f"note: dkim.enabled is false in {ctx.config_path}", err=True)


def _write_key(generate: Callable[[Path], str], path: Path) -> str:
    try:
        return generate(path)
    except OSError as exc:
        raise CliError(f"cannot write the key {path}: {exc.strerror or exc}") from None


def _zone_strings(value: str) -> str:
    """A TXT value as zone-file strings: one string holds at most 255 bytes (RFC 1035)."""
    parts = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    quoted = " ".join(f'"{p}"' for p in parts)
    return quoted if len(parts) == 1 else f"( {quoted} )"


# --- TLS ---------------------------------------------------------------------------


@main.group()
@common
def tls() -> None:
    """TLS certificates."""


@tls.command("selfsigned")
@common
@click.option("--hostname", type=TEXT, help="Name in the certificate (default: smtp.hostname).")
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    metavar="N",
    default=365,
    show_default=True,
    help="Valid for N days, 1 to 3650.",
)
@click.option("--force", is_flag=True, help="Replace an existing certificate and key.")
@pass_ctx
@handled
def tls_selfsigned(ctx: Context, hostname: str | None, days: int, force: bool) -> None:
    """Write a self-signed certificate for trying STARTTLS out.

    It goes where smtp.tls_cert and smtp.tls_key say, or to tls/relay.crt and
    tls/relay.key next to the configuration file.  Senders will not trust it:
    production needs a certificate from a real authority.
    """
    from relay.core.tls import generate_self_signed

    config = ctx.config
    base = ctx.config_path.parent.resolve()
    cert = config.smtp.tls_cert or base / "tls" / "relay.crt"
    key = config.smtp.tls_key or base / "tls" / "relay.key"
    for existing in (cert, key):
        if existing.exists() and not force:
            raise CliError(f"{existing} exists; use --force to replace it")
    name = hostname or config.smtp.hostname
    generate_self_signed(cert, key, hostname=name, days=days)
    emit(
        ctx,
        {"certificate": str(cert), "key": str(key), "hostname": name, "days": days},
        [f"wrote {cert} and {key} for {name}, valid {days} days"],
    )
    if config.smtp.tls_cert is None:
        click.echo(
            f"note: set smtp.tls_cert: {cert} and smtp.tls_key: {key} in {ctx.config_path}"
            " to offer STARTTLS",
            err=True,
        )
