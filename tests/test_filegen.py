"""The generated files are what libmagic (via python-magic) and the format readers say they are."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable

import magic
import olefile
import pytest

from tests import filegen

DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest.mark.parametrize(
    ("generator", "mime"),
    [
        (filegen.pdf, "application/pdf"),
        (lambda: filegen.pdf_of_size(3_000), "application/pdf"),
        (filegen.docx, DOCX_MIME),
        (filegen.docm, DOCX_MIME),  # libmagic does not tell macro-enabled OOXML apart
        (filegen.doc, "application/msword"),
        (lambda: filegen.doc(macros=True), "application/msword"),
        (filegen.jpeg, "image/jpeg"),
        (filegen.png, "image/png"),
        (filegen.gif, "image/gif"),
        (filegen.text, "text/plain"),
        (filegen.elf, "application/x-executable"),
        (filegen.pe_exe, "application/vnd.microsoft.portable-executable"),
        (filegen.zip_archive, "application/zip"),
        (filegen.html_file, "text/html"),
    ],
)
def test_libmagic_mime_type(generator: Callable[[], bytes], mime: str) -> None:
    assert magic.from_buffer(generator(), mime=True) == mime


@pytest.mark.parametrize("n", [2_000, 2_001, 9_999, 10_000, 123_457, 3_500_000])
def test_pdf_of_size_is_exact_and_well_formed(n: int) -> None:
    data = filegen.pdf_of_size(n)
    assert len(data) == n
    assert data.startswith(b"%PDF-1.4") and data.endswith(b"%%EOF\n")
    startxref = int(re.findall(rb"startxref\n(\d+)\n", data)[-1])
    assert data[startxref:].startswith(b"xref\n")
    offsets = [int(x) for x in re.findall(rb"(\d{10}) 00000 n \n", data)]
    for number, offset in enumerate(offsets, start=1):
        assert data[offset:].startswith(b"%d 0 obj\n" % number)
    for m in re.finditer(rb"/Length (\d+) >>\nstream\n", data):
        end = m.end() + int(m.group(1))
        assert data[end:].startswith(b"\nendstream")


def test_pdf_of_size_rejects_tiny_sizes() -> None:
    with pytest.raises(ValueError):
        filegen.pdf_of_size(100)


def test_docx_parts() -> None:
    with zipfile.ZipFile(io.BytesIO(filegen.docx())) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == ["[Content_Types].xml", "_rels/.rels", "word/document.xml"]
        assert b"wordprocessingml.document.main+xml" in zf.read("[Content_Types].xml")


def test_docm_parts_and_vba_project() -> None:
    with zipfile.ZipFile(io.BytesIO(filegen.docm())) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == [
            "[Content_Types].xml",
            "_rels/.rels",
            "word/document.xml",
            "word/_rels/document.xml.rels",
            "word/vbaProject.bin",
        ]
        assert b"application/vnd.ms-word.document.macroEnabled.main+xml" in zf.read(
            "[Content_Types].xml"
        )
        assert b"relationships/vbaProject" in zf.read("word/_rels/document.xml.rels")
        vba_project = zf.read("word/vbaProject.bin")
    with olefile.OleFileIO(io.BytesIO(vba_project)) as ole:
        assert ole.exists("VBA/dir") and ole.exists("VBA/_VBA_PROJECT")
        assert ole.exists("PROJECT")


def test_doc_without_macros() -> None:
    with olefile.OleFileIO(io.BytesIO(filegen.doc())) as ole:
        assert ole.listdir() == [["\x05SummaryInformation"], ["1Table"], ["WordDocument"]]
        assert not ole.exists("Macros")
        assert ole.root.clsid == "00020906-0000-0000-C000-000000000046"
        assert ole.openstream("WordDocument").read(2) == b"\xec\xa5"  # FIB wIdent 0xA5EC
        assert ole.get_metadata().creating_application == b"Microsoft Office Word"


def test_doc_with_macros_has_macros_vba_storage() -> None:
    with olefile.OleFileIO(io.BytesIO(filegen.doc(macros=True))) as ole:
        assert ole.get_type("Macros") == olefile.STGTY_STORAGE
        assert ole.get_type("Macros/VBA") == olefile.STGTY_STORAGE
        assert ole.exists("Macros/VBA/dir") and ole.exists("Macros/VBA/_VBA_PROJECT")
        assert ["Macros", "VBA", "dir"] in ole.listdir()
        assert ole.openstream("Macros/VBA/_VBA_PROJECT").read(2) == b"\xcc\x61"
        assert ole.openstream("WordDocument").read(2) == b"\xec\xa5"


def test_compound_file_round_trips_large_and_small_streams() -> None:
    tree: filegen.Tree = {
        "Big": bytes(range(256)) * 300,  # regular sectors, needs a second FAT sector
        "Small": b"tiny",  # mini stream
        "Dir": {"Exactly4096": b"q" * 4096, "Under64": b"r" * 63},
    }
    with olefile.OleFileIO(io.BytesIO(filegen._cfb(tree))) as ole:
        assert ole.openstream("Big").read() == tree["Big"]
        assert ole.openstream("Small").read() == b"tiny"
        assert ole.openstream("Dir/Exactly4096").read() == b"q" * 4096
        assert ole.openstream("Dir/Under64").read() == b"r" * 63


@pytest.mark.parametrize(
    ("generator", "signature"),
    [
        (filegen.jpeg, b"\xff\xd8\xff\xe0"),
        (filegen.png, b"\x89PNG\r\n\x1a\n"),
        (filegen.gif, b"GIF89a"),
        (filegen.elf, b"\x7fELF\x02\x01\x01"),
        (filegen.pe_exe, b"MZ"),
    ],
)
def test_binary_signatures(generator: Callable[[], bytes], signature: bytes) -> None:
    assert generator().startswith(signature)


def test_pe_header_points_to_pe_signature() -> None:
    data = filegen.pe_exe()
    e_lfanew = int.from_bytes(data[0x3C:0x40], "little")
    assert data[e_lfanew : e_lfanew + 4] == b"PE\0\0"


def test_zip_archive_contents() -> None:
    with zipfile.ZipFile(io.BytesIO(filegen.zip_archive())) as zf:
        assert zf.read("hello.txt") == filegen.text()


def test_text_is_utf8_vietnamese() -> None:
    assert "Xin chào" in filegen.text().decode("utf-8")


@pytest.mark.parametrize("name", filegen.__all__)
def test_generators_are_deterministic(name: str) -> None:
    generator = getattr(filegen, name)
    data = generator(2_500) if name == "pdf_of_size" else generator()
    assert isinstance(data, bytes)
    assert data == (generator(2_500) if name == "pdf_of_size" else generator())
