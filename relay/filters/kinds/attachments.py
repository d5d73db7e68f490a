"""``attachments``: file types detected from the content, and a total size limit.

The type of every attachment (and of every inline part that is not the text
body, such as the images of an HTML body) comes from its decoded bytes, read by
libmagic; the file name and the declared Content-Type are never trusted, only
compared: a file whose name or declared type says one kind of file while its
content is another is *disguised* and refused whatever its real type.  Word
files are opened to check that they are what libmagic thinks (a ``.docx`` is a
ZIP with ``word/document.xml``, a ``.doc`` an OLE2 file with a ``WordDocument``
stream) and that they carry no macros.

    match:
      attachments:
        allow: [pdf, word, image, text]   # groups, or MIME types like image/webp
        max_total_size: 7MB               # decoded bytes; the total must stay under it

A rule may check types (``allow``), size (``max_total_size``) or both.  Type
findings name each offending part, and size findings the parts that take the
total to or over the limit, so ``strip`` removes exactly those.
"""

from __future__ import annotations

import io
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import magic
import olefile
from pydantic import field_validator

from relay.filters.base import Finding
from relay.filters.kinds.common import Settings
from relay.filters.registry import register
from relay.filters.view import Attachment, MessageView

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
GROUPS: dict[str, frozenset[str]] = {
    "pdf": frozenset({"application/pdf"}),
    "word": frozenset({"application/msword", DOCX}),
    "image": frozenset({"image/jpeg", "image/png", "image/gif"}),
    "text": frozenset({"text/plain"}),
}
"""The names an admin may use in ``allow``; anything else there is a MIME type."""

_FAMILY_OF_TYPE = {
    "application/pdf": "pdf",
    "application/msword": "word",
    DOCX: "word",
    "application/vnd.ms-word.document.macroenabled.12": "word",
    "application/rtf": "rtf",
    "text/rtf": "rtf",
    "text/plain": "text",
    "text/html": "html",
    "application/zip": "archive",
    "application/x-zip-compressed": "archive",
    "application/x-rar": "archive",
    "application/vnd.rar": "archive",
    "application/x-rar-compressed": "archive",
    "application/x-7z-compressed": "archive",
    "application/gzip": "archive",
    "application/x-gzip": "archive",
    "application/x-tar": "archive",
    "application/x-bzip2": "archive",
    "application/x-xz": "archive",
    "application/java-archive": "archive",
    "application/x-executable": "executable",
    "application/x-pie-executable": "executable",
    "application/x-sharedlib": "executable",
    "application/x-elf": "executable",
    "application/x-dosexec": "executable",
    "application/vnd.microsoft.portable-executable": "executable",
    "application/x-msdownload": "executable",
    "application/x-msdos-program": "executable",
    "application/x-mach-binary": "executable",
    "application/x-msi": "executable",
}
_FAMILY_OF_EXTENSION = {
    **dict.fromkeys(["pdf"], "pdf"),
    **dict.fromkeys(["doc", "docx", "docm", "dot", "dotx", "dotm"], "word"),
    **dict.fromkeys(["jpg", "jpeg", "jpe", "png", "gif"], "image"),
    **dict.fromkeys(["txt", "text"], "text"),
    **dict.fromkeys(["htm", "html"], "html"),
    **dict.fromkeys(["rtf"], "rtf"),
    **dict.fromkeys(["zip", "rar", "7z", "gz", "tgz", "tar", "bz2", "xz", "jar"], "archive"),
    **dict.fromkeys(
        ["exe", "dll", "scr", "com", "msi", "bat", "cmd", "ps1", "vbs", "apk", "elf", "bin"],
        "executable",
    ),
}
_OLE_TYPES = frozenset(
    {
        "application/msword",
        "application/x-ole-storage",
        "application/cdfv2",
        "application/vnd.ms-office",
    }
)
_SNIFF_BYTES = 1 << 20
"""libmagic decides from the start of a file; a 5 MB PDF need not be copied whole."""

_local = threading.local()


def _magic() -> magic.Magic:
    """One libmagic handle per thread: a handle is not safe to share."""
    handle: magic.Magic | None = getattr(_local, "magic", None)
    if handle is None:
        handle = _local.magic = magic.Magic(mime=True)
    return handle


def family(mime: str) -> str | None:
    mime = mime.lower()
    if mime in _FAMILY_OF_TYPE:
        return _FAMILY_OF_TYPE[mime]
    if mime.startswith("image/"):
        return "image"
    return None


@dataclass(frozen=True, slots=True)
class Detected:
    mime: str
    macros: bool = False
    problem: str = ""
    """Why a file that looks like a known type is not one (a ZIP posing as .docx)."""


def detect(data: bytes) -> Detected:
    """The type of ``data`` from its content alone."""
    if not data:
        return Detected("text/plain")  # an empty file is trivially plain text
    mime = str(_magic().from_buffer(data[:_SNIFF_BYTES])).lower()
    if mime in _OLE_TYPES:
        return _inspect_ole(data, mime)
    if (
        mime == "application/zip"
        or mime.startswith("application/vnd.openxmlformats")
        or (mime.startswith("application/vnd.ms-word"))
    ):
        return _inspect_zip(data, mime)
    return Detected(mime)


def _inspect_ole(data: bytes, mime: str) -> Detected:
    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            paths = [
                [p.lower() for p in entry] for entry in ole.listdir(streams=True, storages=True)
            ]
    except Exception:  # olefile raises many types on damaged files
        return Detected(mime, problem="a damaged OLE2 (Office 97-2003) file")
    macros = any(p[0] in ("macros", "_vba_project_cur") or "vba" in p for p in paths)
    if ["worddocument"] in paths:
        return Detected("application/msword", macros=macros)
    return Detected(mime if mime != "application/msword" else "application/x-ole-storage", macros)


def _inspect_zip(data: bytes, mime: str) -> Detected:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            types = (
                archive.read("[Content_Types].xml")[:65536].decode("utf-8", "replace").lower()
                if "[Content_Types].xml" in names
                else ""
            )
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError, NotImplementedError):
        return Detected(mime, problem="a damaged ZIP container")
    macros = any(n.lower().endswith("vbaproject.bin") for n in names) or "macroenabled" in types
    if "word/document.xml" in names and "[Content_Types].xml" in names:
        return Detected(
            DOCX if not macros else "application/vnd.ms-word.document.macroenabled.12", macros
        )
    if mime != "application/zip":  # libmagic saw an Office header, the parts are not there
        return Detected(
            "application/zip", problem=f"claims to be {mime} but is a plain ZIP archive"
        )
    return Detected(mime, macros)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: Any) -> int:
    """Bytes from ``7000000``, ``"7MB"`` (10**6) or ``"7MiB"`` (2**20)."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '7MB'")
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a size (examples: 7000000, '7MB', '500 KiB')")
        size = int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])
    if size <= 0:
        raise ValueError("a size limit must be positive")
    return size


class AttachmentSettings(Settings):
    allow: list[str] | None = None
    max_total_size: int | None = None

    @field_validator("max_total_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int | None:
        return None if value is None else parse_size(value)

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if item.lower() not in GROUPS and not re.fullmatch(r"[\w.+-]+/[\w.+-]+", item):
                raise ValueError(
                    f"{item!r} is neither a group ({', '.join(GROUPS)}) nor a MIME type"
                )
        return value


class Attachments:
    finds_parts = True
    """Every finding names its MIME part: ``strip`` can remove it."""

    def __init__(self, settings: AttachmentSettings) -> None:
        if settings.allow is None and settings.max_total_size is None:
            raise ValueError("give 'allow' (types), 'max_total_size' or both")
        self.check_types = settings.allow is not None
        allowed: set[str] = set()
        for item in settings.allow or []:
            allowed |= GROUPS.get(item.lower(), frozenset({item.lower()}))
        self.allowed = frozenset(allowed)
        self.limit = settings.max_total_size

    def find(self, view: MessageView) -> Iterator[Finding]:
        if self.check_types:
            for item in view.attachments:
                problem = self.type_problem(item)
                if problem:
                    yield Finding(f"{item.label}: {problem}", item.label, part=item.index)
        if self.limit is not None:
            total = 0
            for item in view.attachments:
                total += len(item.data)
                if total >= self.limit:
                    yield Finding(
                        f"{item.label} ({len(item.data):,} bytes) takes the attachments to"
                        f" {total:,} bytes (limit: under {self.limit:,})",
                        item.label,
                        part=item.index,
                    )

    def type_problem(self, item: Attachment) -> str:
        """Why this attachment is refused, or "" if it is allowed."""
        found = detect(item.data)
        if found.problem:
            return f"content is {found.mime}: {found.problem}"
        if found.macros:
            return f"content is {found.mime}, a document with macros"
        actual = family(found.mime)
        claims = []
        extension = item.filename.rsplit(".", 1)[-1].lower() if "." in item.filename else ""
        if _FAMILY_OF_EXTENSION.get(extension, actual) != actual:
            claims.append(f"named .{extension}")
        declared = family(item.declared)
        if declared is not None and declared != actual:
            claims.append(f"declared {item.declared}")
        if claims:
            return f"content is {found.mime}, disguised ({', '.join(claims)})"
        if found.mime not in self.allowed:
            return f"content is {found.mime}, not an allowed type"
        return ""


@register("attachments")
def attachments(value: Any) -> Attachments:
    return Attachments(AttachmentSettings.model_validate(value or {}))
