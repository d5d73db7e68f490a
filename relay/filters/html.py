"""What an HTML body shows and where it points, and rewriting it for redact/strip.

Rules look at HTML the way a reader's mail client does: visible text with
entities decoded (``&#104;ttp`` is "http"), link targets from ``href``s, and
images that sit inside a link (a logo linking to a website).  Python's
``html.parser`` is lenient, never raises on broken markup, and decodes entities
in text and attribute values, which is what evasion tricks rely on.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser

from relay.filters.spans import replace_spans

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
        if is_image(tag, attrs):
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


def is_image(tag: str, attrs: Attrs) -> bool:
    return tag in _IMAGES or (tag == "input" and (_attr(attrs, "type") or "").lower() == "image")


class _Copier(_Walker):
    """Reads a document as markup pieces and text chunks, to write it back changed.

    Text is kept apart from markup so that a match can be sought in the text as it
    reads (``call <b>me</b>`` is "call me") and cut out of every chunk it spans.
    Block boundaries are chunks of their own ("\n"), so that matches do not run
    across them, but are in no piece and so are not written back.
    """

    def __init__(self, on_tag: TagHook) -> None:
        super().__init__()
        self.on_tag = on_tag
        self.pieces: list[str | int] = []
        """Markup as is, or the index of a text chunk."""
        self.chunks: list[str] = []

    def _tag(self, tag: str, attrs: Attrs, selfclosing: bool) -> None:
        if tag in _BLOCK:
            self.chunks.append("\n")
        replacement = self.on_tag(tag, attrs, self.link)
        self.pieces.append(self.get_starttag_text() or "" if replacement is None else replacement)
        self._enter(tag, attrs, selfclosing)

    def handle_starttag(self, tag: str, attrs: Attrs) -> None:
        self._tag(tag, attrs, False)

    def handle_startendtag(self, tag: str, attrs: Attrs) -> None:
        self._tag(tag, attrs, True)

    def handle_endtag(self, tag: str) -> None:
        self._leave(tag)
        self.pieces.append(f"</{tag}>")
        if tag in _BLOCK:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if self.cdata_elem is not None:  # script/style: not text
            self.pieces.append(data)
            return
        self.pieces.append(len(self.chunks))
        self.chunks.append(data)

    def handle_comment(self, data: str) -> None:
        self.pieces.append(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self.pieces.append(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self.pieces.append(f"<?{data}>")

    def unknown_decl(self, data: str) -> None:
        self.pieces.append(f"<![{data}]>")

    def render(self, spans: Sequence[tuple[int, int]] = (), marker: str = "") -> str:
        """The document, with ``spans`` of the joined text replaced by ``marker``."""
        starts: list[int] = []
        pos = 0
        for chunk in self.chunks:
            starts.append(pos)
            pos += len(chunk)
        out: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            begin = starts[piece]
            local = [(s - begin, e - begin) for s, e in spans]
            out.append(html.escape(replace_spans(self.chunks[piece], local, marker), quote=False))
        return "".join(out)


def _copy(source: str, on_tag: TagHook) -> _Copier:
    parser = _Copier(on_tag)
    parser.feed(source)
    parser.close()
    return parser


def rewrite(source: str, *, on_tag: TagHook) -> str:
    """The document with tags passed through ``on_tag``.

    Only called when something must change; untouched bodies keep their bytes.
    """
    return _copy(source, on_tag).render()


def build_tag(tag: str, attrs: Attrs) -> str:
    """A start tag (void elements need no "/>" in HTML)."""
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
    return value.strip("".join(map(chr, range(0x20))) + " ")


Spans = Callable[[str], list[tuple[int, int]]]
_TEXT_ATTRS = frozenset({"alt", "title"})
"""Attributes a reader sees as text (an image's alt text shows when images are off)."""


def redact(source: str, spans: Spans, marker: str) -> str | None:
    """The HTML with every match in its visible text and text attributes replaced
    by ``marker`` and matching link targets removed; None if nothing matched."""
    touched = False

    def on_tag(tag: str, attrs: Attrs, _link: str | None) -> str | None:
        nonlocal touched
        new_attrs: Attrs = []
        changed = False
        for name, value in attrs:
            if value and name == LINK_ATTRS.get(tag) and spans(value):
                changed = True  # the link goes, its text stays
                continue
            if value and name in _TEXT_ATTRS:
                found = spans(value)
                if found:
                    changed = True
                    value = replace_spans(value, found, marker)
            new_attrs.append((name, value))
        if not changed:
            return None
        touched = True
        return build_tag(tag, new_attrs)

    copier = _copy(source, on_tag)
    found = spans("".join(copier.chunks))
    if not found and not touched:
        return None
    return copier.render(found, marker)
