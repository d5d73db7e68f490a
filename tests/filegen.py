"""Genuine small files built in memory, for tests of content-type detection.

Every generator returns ``bytes`` and uses only the standard library. The formats are written
by hand (PDF, OLE2 compound file, JPEG, PNG, GIF, ELF, PE) or with :mod:`zipfile` (OOXML, ZIP).
"""

from __future__ import annotations

import io
import struct
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "doc",
    "docm",
    "docx",
    "elf",
    "gif",
    "html_file",
    "jpeg",
    "pdf",
    "pdf_of_size",
    "pe_exe",
    "png",
    "text",
    "zip_archive",
]

# --------------------------------------------------------------------------------------- PDF


def _pdf(text: str, padding: int = 0) -> bytes:
    """A one-page PDF 1.4 showing ``text``, with an unreferenced stream of ``padding`` bytes."""
    content = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET\n".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
    ]
    if padding:
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (padding, b"%" * padding))
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def pdf() -> bytes:
    """A small valid PDF 1.4: one page with one line of text."""
    return _pdf("Hello from the marketplace relay")


def pdf_of_size(n: int) -> bytes:
    """A valid PDF of exactly ``n`` bytes (n >= 2000), padded with an unreferenced stream."""
    if n < 2000:
        raise ValueError("pdf_of_size needs n >= 2000")
    padding = n - len(_pdf("Sized document", 1))
    data = _pdf("Sized document", padding)
    while len(data) != n:  # the digit counts of /Length and startxref may shift by one
        padding += n - len(data)
        data = _pdf("Sized document", padding)
    return data


# -------------------------------------------------------------------------------------- OOXML

_CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_OFFICE_DOC_REL = (
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"
)
_VBA_REL = "http://schemas.microsoft.com/office/2006/relationships/vbaProject"
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_DOCUMENT_XML = (
    _XML_HEAD
    + '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>Xin chào, this is a test document.</w:t></w:r></w:p>"
    "</w:body></w:document>"
)


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    """A deflated ZIP archive of ``members`` in order, with fixed timestamps (reproducible)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _word_package(main_type: str, vba_project: bytes | None) -> bytes:
    """An OPC package with ``word/document.xml`` as main part, optionally with a VBA project."""
    bin_default = ""
    if vba_project is not None:
        bin_default = (
            '<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
        )
    content_types = (
        f'{_XML_HEAD}<Types xmlns="{_CT_NS}">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f"{bin_default}"
        f'<Override PartName="/word/document.xml" ContentType="{main_type}"/></Types>'
    )
    root_rels = (
        f'{_XML_HEAD}<Relationships xmlns="{_REL_NS}">'
        f'<Relationship Id="rId1" Type="{_OFFICE_DOC_REL}" Target="word/document.xml"/>'
        "</Relationships>"
    )
    # libmagic needs [Content_Types].xml first and a word/ part third.
    members = [
        ("[Content_Types].xml", content_types.encode()),
        ("_rels/.rels", root_rels.encode()),
        ("word/document.xml", _DOCUMENT_XML.encode()),
    ]
    if vba_project is not None:
        document_rels = (
            f'{_XML_HEAD}<Relationships xmlns="{_REL_NS}">'
            f'<Relationship Id="rId1" Type="{_VBA_REL}" Target="vbaProject.bin"/>'
            "</Relationships>"
        )
        members.append(("word/_rels/document.xml.rels", document_rels.encode()))
        members.append(("word/vbaProject.bin", vba_project))
    return _zip(members)


def docx() -> bytes:
    """A minimal Word 2007+ document (.docx) with one paragraph."""
    main = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
    return _word_package(main, None)


def docm() -> bytes:
    """A macro-enabled Word document (.docm) whose word/vbaProject.bin is an OLE VBA project."""
    main = "application/vnd.ms-word.document.macroEnabled.main+xml"
    return _word_package(main, _cfb(_vba_project()))


# ------------------------------------------------------------- OLE2 compound file (MS-CFB)

Tree: TypeAlias = "dict[str, bytes | Tree]"  # storage: name -> stream data or sub-storage

_SECTOR = 512
_MINI_SECTOR = 64
_MINI_CUTOFF = 4096
_FREESECT, _ENDOFCHAIN, _FATSECT, _NOSTREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
_STORAGE, _STREAM, _ROOT = 1, 2, 5


@dataclass
class _DirEntry:
    name: str
    kind: int
    data: bytes = b""
    left: int = _NOSTREAM
    right: int = _NOSTREAM
    child: int = _NOSTREAM
    start: int = _ENDOFCHAIN
    size: int = 0


def _cfb_entries(tree: Tree) -> list[_DirEntry]:
    """Flatten ``tree`` into directory entries; siblings form a balanced all-black BST."""
    entries: list[_DirEntry] = []

    def balanced(ids: list[int]) -> int:
        if not ids:
            return _NOSTREAM
        mid = len(ids) // 2
        entries[ids[mid]].left = balanced(ids[:mid])
        entries[ids[mid]].right = balanced(ids[mid + 1 :])
        return ids[mid]

    def add(name: str, node: bytes | Tree, kind: int) -> int:
        index = len(entries)
        if isinstance(node, bytes):
            entries.append(_DirEntry(name, kind, node))
            return index
        entries.append(_DirEntry(name, kind))
        ordered = sorted(node, key=lambda child: (len(child), child.upper()))
        ids = [
            add(k, node[k], _STREAM if isinstance(node[k], bytes) else _STORAGE) for k in ordered
        ]
        entries[index].child = balanced(ids)
        return index

    add("Root Entry", tree, _ROOT)
    return entries


def _chain(start: int, count: int) -> list[int]:
    """FAT entries for ``count`` consecutive sectors starting at ``start``."""
    return [*range(start + 1, start + count), _ENDOFCHAIN] if count else []


def _cfb(tree: Tree, clsid: bytes = bytes(16)) -> bytes:
    """An OLE2 compound file (version 3, 512-byte sectors) holding ``tree``; ``clsid`` of root."""
    entries = _cfb_entries(tree)
    # Streams under the cutoff live in the mini stream (64-byte sectors, own FAT).
    mini, minifat = bytearray(), list[int]()
    for entry in entries:
        if entry.kind == _STREAM and 0 < len(entry.data) < _MINI_CUTOFF:
            count = -(-len(entry.data) // _MINI_SECTOR)
            entry.start = len(minifat)
            minifat += _chain(entry.start, count)
            mini += entry.data.ljust(count * _MINI_SECTOR, b"\0")
    entries[0].data = bytes(mini)  # the root entry's stream is the mini stream
    while len(entries) % (_SECTOR // 128):
        entries.append(_DirEntry("", 0))
    minifat_bytes = struct.pack(f"<{len(minifat)}I", *minifat)
    minifat_bytes = minifat_bytes.ljust(-(-len(minifat_bytes) // _SECTOR) * _SECTOR, b"\xff")
    # Regular sectors: FAT, directory, mini FAT, then the mini stream and the large streams.
    big = [e for e in entries if e.data and (e.kind == _ROOT or len(e.data) >= _MINI_CUTOFF)]
    sizes = [len(entries) * 128, len(minifat_bytes), *(len(e.data) for e in big)]
    counts = [-(-size // _SECTOR) for size in sizes]
    n_fat = 1
    while n_fat * (_SECTOR // 4) < n_fat + sum(counts):
        n_fat += 1
    if n_fat > 109:
        raise ValueError("compound file too large for a header-only DIFAT")
    fat, starts = [_FATSECT] * n_fat, []
    for count in counts:
        starts.append(len(fat) if count else _ENDOFCHAIN)
        fat += _chain(len(fat), count)
    fat += [_FREESECT] * (n_fat * (_SECTOR // 4) - len(fat))
    for entry, start in zip(big, starts[2:], strict=True):
        entry.start = start
    directory = b"".join(
        struct.pack(
            "<64sHBBIII16sIQQIQ",
            (e.name + "\0").encode("utf-16-le") if e.name else b"",
            (len(e.name) + 1) * 2 if e.name else 0,
            e.kind,
            1,  # black: MS-CFB allows an all-black tree
            e.left,
            e.right,
            e.child,
            clsid if e.kind == _ROOT else bytes(16),
            0,  # state bits
            0,  # creation time
            0,  # modification time
            e.start if e.kind in (_STREAM, _ROOT) else 0,
            len(e.data),
        )
        for e in entries
    )
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII109I",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        bytes(16),
        0x003E,  # minor version
        0x0003,  # major version: 512-byte sectors
        0xFFFE,  # byte order mark
        9,  # sector shift
        6,  # mini sector shift
        bytes(6),
        0,  # directory sectors (always 0 in version 3)
        n_fat,
        starts[0],
        0,  # transaction signature
        _MINI_CUTOFF,
        starts[1],
        counts[1],
        _ENDOFCHAIN,  # no DIFAT sectors
        0,
        *range(n_fat),
        *[_FREESECT] * (109 - n_fat),
    )
    body = [directory, minifat_bytes, *(e.data for e in big)]
    return b"".join(
        [
            header,
            struct.pack(f"<{len(fat)}I", *fat),
            *(data.ljust(count * _SECTOR, b"\0") for data, count in zip(body, counts, strict=True)),
        ]
    )


# ------------------------------------------------------------------- VBA project (MS-OVBA)


def _ovba_compress(data: bytes) -> bytes:
    """An MS-OVBA compressed container holding ``data`` as one chunk of literal tokens."""
    if len(data) > 3000:  # a compressed chunk may not exceed 4098 bytes
        raise ValueError("source too long for a single literal chunk")
    tokens = b"".join(b"\0" + data[i : i + 8] for i in range(0, len(data), 8))
    return b"\x01" + struct.pack("<H", 0xB000 | (len(tokens) - 1)) + tokens


def _ovba_encrypt(data: bytes, project_id: bytes, seed: int = 0x0A) -> bytes:
    """MS-OVBA "data encryption" of ``data``, hex encoded, as used for CMG/DPB/GC."""
    key = sum(project_id) & 0xFF
    out = [seed, seed ^ 2, seed ^ key]
    unencrypted, encrypted1, encrypted2 = key, out[2], out[1]
    for byte in bytes((seed & 6) // 2) + struct.pack("<I", len(data)) + data:
        out.append(byte ^ ((encrypted2 + unencrypted) & 0xFF))
        encrypted2, encrypted1, unencrypted = encrypted1, out[-1], byte
    return bytes(out).hex().upper().encode("ascii")


def _rec(ident: int, data: bytes = b"") -> bytes:
    """One record of the VBA ``dir`` stream: id, size, data."""
    return struct.pack("<HI", ident, len(data)) + data


def _vba_project() -> Tree:
    """Storages and streams of a VBA project with one standard module, laid out as Word does."""
    module, module_u = b"Module1", "Module1".encode("utf-16-le")
    source = (
        b'Attribute VB_Name = "Module1"\r\nSub Greeting()\r\n    MsgBox "Xin chao"\r\nEnd Sub\r\n'
    )
    directory = b"".join(
        [
            _rec(0x01, struct.pack("<I", 1)),  # PROJECTSYSKIND: 32-bit Windows
            _rec(0x02, struct.pack("<I", 0x409)),  # PROJECTLCID
            _rec(0x14, struct.pack("<I", 0x409)),  # PROJECTLCIDINVOKE
            _rec(0x03, struct.pack("<H", 1252)),  # PROJECTCODEPAGE
            _rec(0x04, b"Project"),  # PROJECTNAME
            _rec(0x05) + _rec(0x40),  # PROJECTDOCSTRING (MBCS, Unicode)
            _rec(0x06) + _rec(0x3D),  # PROJECTHELPFILEPATH (twice)
            _rec(0x07, struct.pack("<I", 0)),  # PROJECTHELPCONTEXT
            _rec(0x08, struct.pack("<I", 0)),  # PROJECTLIBFLAGS
            struct.pack("<HIIH", 0x09, 4, 1, 0),  # PROJECTVERSION (size field is always 4)
            _rec(0x0C) + _rec(0x3C),  # PROJECTCONSTANTS (MBCS, Unicode)
            _rec(0x0F, struct.pack("<H", 1)),  # PROJECTMODULES: one module
            _rec(0x13, struct.pack("<H", 0xFFFF)),  # PROJECTCOOKIE
            _rec(0x19, module) + _rec(0x47, module_u),  # MODULENAME (MBCS, Unicode)
            _rec(0x1A, module) + _rec(0x32, module_u),  # MODULESTREAMNAME (MBCS, Unicode)
            _rec(0x1C) + _rec(0x48),  # MODULEDOCSTRING (MBCS, Unicode)
            _rec(0x31, struct.pack("<I", 0)),  # MODULEOFFSET: source starts the stream
            _rec(0x1E, struct.pack("<I", 0)),  # MODULEHELPCONTEXT
            _rec(0x2C, struct.pack("<H", 0xFFFF)),  # MODULECOOKIE
            _rec(0x21) + _rec(0x2B),  # MODULETYPE (procedural), module terminator
            _rec(0x10),  # end of dir stream
        ]
    )
    project_id = b"{1B2C3D4E-5F60-4A7B-8C9D-0E1F2A3B4C5D}"
    project = b"\r\n".join(
        [
            b'ID="' + project_id + b'"',
            b"Module=Module1",
            b'Name="Project"',
            b'HelpContextID="0"',
            b'VersionCompatible32="393222000"',
            b'CMG="' + _ovba_encrypt(bytes(4), project_id) + b'"',  # not protected
            b'DPB="' + _ovba_encrypt(b"\0", project_id) + b'"',  # no password
            b'GC="' + _ovba_encrypt(b"\xff", project_id) + b'"',  # visible
            b"",
            b"[Host Extender Info]",
            b"&H00000001={3832D640-CF90-11CF-8E43-00A0C911005A};VBE;&H00000000",
            b"",
            b"[Workspace]",
            b"Module1=0, 0, 0, 0, C",
            b"",
        ]
    )
    return {
        "PROJECT": project,
        "PROJECTwm": module + b"\0" + module_u + b"\0\0" + b"\0\0",
        "VBA": {
            "_VBA_PROJECT": struct.pack("<HHBH", 0x61CC, 0xFFFF, 0, 0),  # no performance cache
            "dir": _ovba_compress(directory),
            "Module1": _ovba_compress(source),
        },
    }


# -------------------------------------------------------------------------- Word 97 (.doc)

_WORD_CLSID = uuid.UUID("00020906-0000-0000-C000-000000000046").bytes_le
_SUMMARY_FMTID = uuid.UUID("F29F85E0-4FF9-1068-AB91-08002B27B3D9").bytes_le


def _summary_information(title: str, application: str) -> bytes:
    """A ``\\x05SummaryInformation`` property set stream with code page, title and app name."""

    def lpstr(value: str) -> bytes:
        raw = value.encode("cp1252") + b"\0"
        return struct.pack("<HHI", 0x1E, 0, len(raw)) + raw.ljust(-(-len(raw) // 4) * 4, b"\0")

    props = [
        (1, struct.pack("<HHhH", 2, 0, 1252, 0)),
        (2, lpstr(title)),
        (0x12, lpstr(application)),
    ]
    index, values = b"", b""
    for pid, value in props:
        index += struct.pack("<II", pid, 8 + 8 * len(props) + len(values))
        values += value
    section = struct.pack("<II", 8 + len(index) + len(values), len(props)) + index + values
    head = struct.pack("<HHI16sI16sI", 0xFFFE, 0, 0x00020006, bytes(16), 1, _SUMMARY_FMTID, 48)
    return head + section


def _word_document(text: bytes) -> tuple[bytes, bytes]:
    """``WordDocument`` and ``1Table`` streams: a Word 97 FIB, 8-bit text, a one-piece table."""
    text_fc = 0x400
    clx_piece_table = struct.pack("<II", 0, len(text)) + struct.pack(
        "<HIH",
        0,
        0x40000000 | (text_fc * 2),
        0,  # fCompressed: 8-bit text at fc / 2
    )
    table = b"\x02" + struct.pack("<I", len(clx_piece_table)) + clx_piece_table
    fib_base = struct.pack(
        "<7HIBBHHII",
        0xA5EC,  # wIdent
        0x00C1,  # nFib: Word 97
        0,
        0x0409,  # lid: English (US)
        0,
        0x1200,  # fWhichTblStm (1Table) | fExtChar
        0x00BF,  # nFibBack
        *[0] * 7,
    )
    rg_lw = [0] * 22
    rg_lw[0], rg_lw[3] = text_fc + len(text), len(text)  # cbMac, ccpText
    rg_fc_lcb = [0] * (93 * 2)
    rg_fc_lcb[66], rg_fc_lcb[67] = 0, len(table)  # fcClx, lcbClx
    fib = b"".join(
        [
            fib_base,
            struct.pack("<H14H", 14, *[0] * 14),  # csw, fibRgW
            struct.pack("<H22I", 22, *rg_lw),  # cslw, fibRgLw97
            struct.pack("<H186I", 93, *rg_fc_lcb),  # cbRgFcLcb, fibRgFcLcb97
            struct.pack("<H", 0),  # cswNew
        ]
    )
    return fib.ljust(text_fc, b"\0") + text, table


def doc(macros: bool = False) -> bytes:
    """A Word 97-2003 document (OLE2 compound file); ``macros`` adds a Macros/VBA project."""
    word_document, table = _word_document(b"Hello from a Word 97 document.\r")
    tree: Tree = {
        "WordDocument": word_document,
        "1Table": table,
        "\x05SummaryInformation": _summary_information("Test document", "Microsoft Office Word"),
    }
    if macros:
        tree["Macros"] = _vba_project()
    return _cfb(tree, _WORD_CLSID)


# ------------------------------------------------------------------------------------ images


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload


def jpeg() -> bytes:
    """A 2x2 solid orange baseline JPEG (JFIF, YCbCr 4:4:4, DC-only blocks)."""
    r, g, b = 240, 140, 20
    ycc = (
        0.299 * r + 0.587 * g + 0.114 * b,
        128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
        128 + 0.5 * r - 0.418688 * g - 0.081312 * b,
    )
    dc_bits = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # the standard luminance DC table
    dc_codes, code = [], 0
    for length, count in enumerate(dc_bits, start=1):
        for _ in range(count):
            dc_codes.append(format(code, f"0{length}b"))
            code += 1
        code <<= 1
    bits = ""
    for value in ycc:  # one 8x8 block per component; quantizer 1, so DC = 8 * (value - 128)
        dc = round(8 * (value - 128))
        size = abs(dc).bit_length()
        bits += dc_codes[size] + (format(dc if dc >= 0 else dc + (1 << size) - 1, f"0{size}b"))
        bits += "0"  # end of block (the only AC code)
    bits += "1" * (-len(bits) % 8)
    scan = int(bits, 2).to_bytes(len(bits) // 8, "big").replace(b"\xff", b"\xff\x00")
    components = [(1, 0x11, 0), (2, 0x11, 0), (3, 0x11, 0)]
    return b"".join(
        [
            b"\xff\xd8",  # SOI
            _jpeg_segment(0xE0, struct.pack(">5sBBBHHBB", b"JFIF\0", 1, 1, 0, 1, 1, 0, 0)),
            _jpeg_segment(0xDB, b"\x00" + bytes([1] * 64)),  # DQT: table 0, all ones
            _jpeg_segment(0xC0, struct.pack(">BHHB", 8, 2, 2, 3) + bytes(sum(components, ()))),
            _jpeg_segment(0xC4, b"\x00" + bytes(dc_bits) + bytes(range(12))),  # DHT DC 0
            _jpeg_segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00"),  # DHT AC 0: EOB
            _jpeg_segment(0xDA, bytes([3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 63, 0])),  # SOS
            scan,
            b"\xff\xd9",  # EOI
        ]
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png() -> bytes:
    """A 2x2 RGB PNG (red, green / blue, white)."""
    rows = [(255, 0, 0, 0, 255, 0), (0, 0, 255, 255, 255, 255)]
    raw = b"".join(b"\0" + bytes(row) for row in rows)  # filter type 0 per row
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)),
            _png_chunk(b"IDAT", zlib.compress(raw)),
            _png_chunk(b"IEND", b""),
        ]
    )


def gif() -> bytes:
    """A 2x2 two-colour GIF89a (red/blue checkerboard)."""
    pixels = [0, 1, 1, 0]
    # LZW with minimum code size 2: a clear code (4) before every pixel keeps codes 3 bits
    # wide and the table empty; 5 ends the data.
    codes = [code for pixel in pixels for code in (4, pixel)] + [5]
    packed = sum(code << (3 * i) for i, code in enumerate(codes))
    data = packed.to_bytes(-(-3 * len(codes) // 8), "little")
    return b"".join(
        [
            b"GIF89a" + struct.pack("<HHBBB", 2, 2, 0x80, 0, 0),  # global table of 2 colours
            bytes([255, 0, 0, 0, 0, 255]),
            b"," + struct.pack("<HHHHB", 0, 0, 2, 2, 0),  # image descriptor
            bytes([2, len(data)]) + data + b"\0",  # min code size, one sub-block, terminator
            b";",
        ]
    )


# ------------------------------------------------------------------------------ text, html


def text() -> bytes:
    """UTF-8 plain text in Vietnamese."""
    return (
        "Xin chào! Đây là tin nhắn thử nghiệm từ người mua.\nCảm ơn bạn đã gửi hàng nhanh chóng.\n"
    ).encode()


def html_file() -> bytes:
    """A small UTF-8 HTML5 document."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="vi">\n'
        '<head><meta charset="utf-8"><title>Xin chào</title></head>\n'
        "<body><p>Xin chào, đây là một trang thử nghiệm.</p></body>\n"
        "</html>\n"
    ).encode()


def zip_archive() -> bytes:
    """A ZIP archive holding one deflated text file."""
    return _zip([("hello.txt", text())])


# ------------------------------------------------------------------------------ executables


def elf() -> bytes:
    """A static ELF64 x86-64 executable that calls exit(0)."""
    base, headers = 0x400000, 64 + 56
    code = bytes.fromhex("b83c00000031ff0f05")  # mov eax, 60 (exit); xor edi, edi; syscall
    ehdr = struct.pack(
        "<4sBBBBB7sHHIQQQIHHHHHH",
        b"\x7fELF",
        2,  # ELFCLASS64
        1,  # little endian
        1,  # EV_CURRENT
        0,  # System V ABI
        0,
        bytes(7),
        2,  # ET_EXEC
        0x3E,  # EM_X86_64
        1,
        base + headers,  # entry point: the code right after the headers
        64,  # program header offset
        0,  # no section headers
        0,
        64,
        56,
        1,
        0,
        0,
        0,
    )
    size = headers + len(code)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, R+X
    return ehdr + phdr + code


def pe_exe() -> bytes:
    """A minimal 32-bit Windows console PE executable whose entry point returns 0."""
    stub = (
        bytes.fromhex("0e1fba0e00b409cd21b8014ccd21")
        + b"This program cannot be run in DOS mode.\r\r\n$"
    )
    dos = struct.pack(
        "<2s29HI", b"MZ", 0x90, 3, 0, 4, 0, 0xFFFF, 0, 0xB8, 0, 0, 0, 0x40, 0, *[0] * 16, 0x80
    )
    coff = struct.pack("<HHIIIHH", 0x014C, 1, 0, 0, 0, 224, 0x0103)  # i386, 1 section
    optional = struct.pack(
        "<HBB9I6H4I2H6I32I",
        0x010B,  # PE32
        14,
        0,
        0x200,  # SizeOfCode
        0,
        0,
        0x1000,  # AddressOfEntryPoint
        0x1000,  # BaseOfCode
        0x2000,  # BaseOfData
        0x400000,  # ImageBase
        0x1000,  # SectionAlignment
        0x200,  # FileAlignment
        6,
        0,
        0,
        0,
        6,  # subsystem version 6.0
        0,
        0,
        0x2000,  # SizeOfImage
        0x200,  # SizeOfHeaders
        0,
        3,  # IMAGE_SUBSYSTEM_WINDOWS_CUI
        0x8100,  # NX compatible, terminal server aware
        0x100000,
        0x1000,
        0x100000,
        0x1000,
        0,
        16,  # data directories (all empty)
        *[0] * 32,
    )
    code = bytes.fromhex("31c0c3")  # xor eax, eax; ret
    section = struct.pack(
        "<8sIIIIIIHHI", b".text", len(code), 0x1000, 0x200, 0x200, 0, 0, 0, 0, 0x60000020
    )
    headers = (dos + stub).ljust(0x80, b"\0") + b"PE\0\0" + coff + optional + section
    return headers.ljust(0x200, b"\0") + code.ljust(0x200, b"\0")
