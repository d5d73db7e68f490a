"""What an HTML body shows and where it points, and rewriting it for redact/strip.

Rules look at HTML the way a reader's mail client does: visible text with
entities decoded (``&#104;ttp`` is "http"), link targets from ``href``s, and
images that sit inside a link (a logo linking to a website).  Python's
``html.parser`` is lenient, never raises on broken markup, and decodes entities
in text and attribute values, which is what evasion tricks rely on.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser

_BLOCK = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_HIDDEN = frozenset({"script", "style", "head", "title", "template"})
LINK_ATTRS = {
    "a": "href",
    "area": "href",
    "form": "action",
    "iframe": "src",
    "frame": "src",
    "base": "href",
}
"""Elements whose attribute takes the reader somewhere else."""
_IMAGES = frozenset({"img", "image"})

Attrs = list[tuple[str, str | None]]


@dataclass
class LinkedImage:
    src: str
    href: str


@dataclass
class HtmlScan:
    text: str
    links: list[str] = field(default_factory=list)
    linked_images: list[LinkedImage] = field(default_factory=list)


class _Walker(HTMLParser):
    """Tracks hidden sections and the link (if any) around the current position."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hidden = 0
        self.link_stack: list[str] = []

    @property
    def link(self) -> str | None:
        return self.link_stack[-1] if self.link_stack else None

    def _enter(self, tag: str, attrs: Attrs, selfclosing: bool) -> None:
        if tag in _HIDDEN and not selfclosing:
            self.hidden += 1
        if tag == "a" and not selfclosing:
            self.link_stack.append(clean_url(_attr(attrs, "href") or ""))

    def _leave(self, tag: str) -> None:
        if tag in _HIDDEN and self.hidden:
            self.hidden -= 1
        if tag == "a" and self.link_stack:
            self.link_stack.pop()


class _Scanner(_Walker):
    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self.result = HtmlScan("")

    def handle_starttag(self, tag: str, attrs: Attrs) -> None:
        self._collect(tag, attrs)
        self._enter(tag, attrs, False)

    def handle_startendtag(self, tag: str, attrs: Attrs) -> None:
        self._collect(tag, attrs)
        self._enter(tag, attrs, True)

    def handle_endtag(self, tag: str) -> None:
        self._leave(tag)
        if tag in _BLOCK:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.chunks.append(data)

    def _collect(self, tag: str, attrs: Attrs) -> None:
        if tag in _BLOCK:
            self.chunks.append("\n")
        attr = LINK_ATTRS.get(tag)
        value = _attr(attrs, attr) if attr else None
        if value:
            self.result.links.append(clean_url(value))
        if tag in _IMAGES or (tag == "input" and (_attr(attrs, "type") or "").lower() == "image"):
            href = self.link
            if href:
                src = _attr(attrs, "src") or _attr(attrs, "href") or ""
                self.result.linked_images.append(LinkedImage(clean_url(src), href))
        if tag == "img" and not self.hidden:
            alt = _attr(attrs, "alt")
            if alt:
                self.chunks.append(f" {alt} ")


def scan(source: str) -> HtmlScan:
    parser = _Scanner()
    parser.feed(source)
    parser.close()
    parser.result.text = "".join(parser.chunks)
    return parser.result


TagHook = Callable[[str, Attrs, str | None], str | None]
"""(tag, attributes, enclosing link) → replacement markup, or None to keep the tag."""


class _Rewriter(_Walker):
    def __init__(self, on_text: Callable[[str], str], on_tag: TagHook) -> None:
        super().__init__()
        self.on_text = on_text
        self.on_tag = on_tag
        self.out: list[str] = []

    def _tag(self, tag: str, attrs: Attrs, selfclosing: bool) -> None:
        replacement = self.on_tag(tag, attrs, self.link)
        self.out.append(self.get_starttag_text() or "" if replacement is None else replacement)
        self._enter(tag, attrs, selfclosing)

    def handle_starttag(self, tag: str, attrs: Attrs) -> None:
        self._tag(tag, attrs, False)

    def handle_startendtag(self, tag: str, attrs: Attrs) -> None:
        self._tag(tag, attrs, True)

    def handle_endtag(self, tag: str) -> None:
        self._leave(tag)
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self.cdata_elem is not None:  # script/style
            self.out.append(data)
        else:
            self.out.append(html.escape(self.on_text(data), quote=False))

    def handle_comment(self, data: str) -> None:
        self.out.append(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self.out.append(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self.out.append(f"<?{data}>")

    def unknown_decl(self, data: str) -> None:
        self.out.append(f"<![{data}]>")


def rewrite(
    source: str,
    *,
    on_text: Callable[[str], str] = lambda s: s,
    on_tag: TagHook = lambda _t, _a, _l: None,
) -> str:
    """The document with text passed through ``on_text`` and tags through ``on_tag``.

    Only called when something must change; untouched bodies keep their bytes.
    """
    parser = _Rewriter(on_text, on_tag)
    parser.feed(source)
    parser.close()
    return "".join(parser.out)


def build_tag(tag: str, attrs: Attrs) -> str:
    parts = [tag]
    for name, value in attrs:
        parts.append(name if value is None else f'{name}="{html.escape(value, quote=True)}"')
    return "<" + " ".join(parts) + ">"


def _attr(attrs: Attrs, name: str) -> str | None:
    for key, value in attrs:
        if key == name:
            return value
    return None


def clean_url(value: str) -> str:
    """A URL attribute as a browser reads it: tabs and newlines inside are ignored,
    surrounding whitespace and control characters stripped (WHATWG URL parsing)."""
    value = value.replace("\t", "").replace("\n", "").replace("\r", "")
    return value.strip(
        "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12"
        "\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f "
    )
