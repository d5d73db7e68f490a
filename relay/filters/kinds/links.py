"""``links`` and ``linked_images``: where a message would take its reader.

``links`` finds every URL (see ``relay.filters.urls`` for the forms caught) in
the subject, the text bodies, the visible text of HTML bodies and the link
attributes of HTML (``href``, ``action``, frame ``src``), and reports those whose
host is not on the allow-list.  ``linked_images`` reports an image inside an
HTML link to a host not on the allow-list: the "logo that links to a website".

    match:
      links:
        allow: [marketplace.example.com, "*.ups.com", ups.com]

Allow-list entries: ``example.com`` allows exactly that host, ``*.example.com``
any host below it (not the domain itself; list both if both are wanted).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field

from relay.filters.base import Finding
from relay.filters.html import Attrs, is_image
from relay.filters.html import rewrite as rewrite_html
from relay.filters.kinds.common import Settings
from relay.filters.registry import register
from relay.filters.urls import allowed, find_urls, href_host, normalize_host
from relay.filters.view import MessageView


class AllowSettings(Settings):
    allow: list[str] = Field(default_factory=list)


def _allow_list(value: Any) -> frozenset[str]:
    settings = AllowSettings.model_validate({} if value is None else value)
    out: set[str] = set()
    for entry in settings.allow:
        entry = entry.strip().lower()
        wildcard = entry.startswith("*.")
        host = normalize_host(entry[2:] if wildcard else entry)
        if not host or "*" in host or "/" in host:
            raise ValueError(f"allow: {entry!r} is not a domain name or *.domain")
        out.add(("*." if wildcard else "") + host)
    return frozenset(out)


class Links:
    def __init__(self, allow: frozenset[str]) -> None:
        self.allow = allow

    def find(self, view: MessageView) -> Iterator[Finding]:
        for where, text in view.texts():
            for url in find_urls(text):
                if not allowed(url.host, self.allow):
                    yield Finding(f"link to {url.host}", where)
        for body in view.bodies:
            if not body.html:
                continue
            for href in view.html(body).links:
                host = href_host(href)
                if host and not allowed(host, self.allow):
                    yield Finding(f"link to {host}", body.where)

    def spans(self, text: str, where: str) -> list[tuple[int, int]]:
        return [(u.start, u.end) for u in find_urls(text) if not allowed(u.host, self.allow)]


class LinkedImages:
    def __init__(self, allow: frozenset[str]) -> None:
        self.allow = allow

    def _external(self, href: str | None) -> str | None:
        host = href_host(href) if href else None
        return host if host and not allowed(host, self.allow) else None

    def find(self, view: MessageView) -> Iterator[Finding]:
        for body in view.bodies:
            if not body.html:
                continue
            for image in view.html(body).linked_images:
                host = self._external(image.href)
                if host:
                    src = image.src if len(image.src) <= 80 else image.src[:79] + "…"
                    yield Finding(f"image {src or '(no source)'} links to {host}", body.where)

    def strip_html(self, source: str, note: str) -> tuple[str, set[str]]:
        cids: set[str] = set()
        removed = 0

        def on_tag(tag: str, attrs: Attrs, link: str | None) -> str | None:
            if not is_image(tag, attrs) or not self._external(link):
                return None
            for key, value in attrs:
                if key in ("src", "href") and value and value.lower().startswith("cid:"):
                    cids.add(value[4:].strip("<> "))
            nonlocal removed
            removed += 1
            return note

        new = rewrite_html(source, on_tag=on_tag)
        return (new if removed else source), cids


@register("links")
def links(value: Any) -> Links:
    return Links(_allow_list(value))


@register("linked_images")
def linked_images(value: Any) -> LinkedImages:
    return LinkedImages(_allow_list(value))
