"""The chunked DATA reader gives what aiosmtpd's line-by-line reader gives.

Hypothesis builds bodies with the awkward cases (lines that start with dots,
bare CR and LF, a terminator split across reads, over-long lines, over-size
bodies, a pipelined command after the dot) and feeds them in random pieces.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.inbound.dataread import MAX_LINE, DataProblem, DataResult, read_data


def reference(stream: bytes, max_size: int | None) -> tuple[DataResult, bytes]:
    """aiosmtpd 1.4's DATA loop, restated: lines up to CRLF, '.' line ends it."""
    lines: list[bytes] = []
    pos = 0
    size = 0
    while True:
        end = stream.index(b"\r\n", pos) + 2
        line = stream[pos:end]
        pos = end
        if line == b".\r\n":
            break
        size += len(line)
        lines.append(line)
    rest = stream[pos:]
    if max_size and size > max_size:
        return DataResult(b"", DataProblem.TOO_MUCH), rest
    if any(len(line) > MAX_LINE for line in lines):
        return DataResult(b"", DataProblem.TOO_LONG), rest
    return DataResult(b"".join(ln[1:] if ln.startswith(b".") else ln for ln in lines)), rest


async def run(stream: bytes, cuts: list[int], max_size: int | None) -> tuple[DataResult, bytes]:
    reader = asyncio.StreamReader(limit=64)  # small, so the limit paths are taken
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    result = await read_data(reader, max_size=max_size)
    await feeder
    return result, await reader.read()


line = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"")),
    st.sampled_from([b".", b"..", b".x", b"\r", b"\n", b"\r.", b".\r", b"x" * (MAX_LINE - 2)]),
    st.just(b"y" * (MAX_LINE - 1)),  # one byte too long with its CRLF
)


@settings(max_examples=500, deadline=None)
@given(
    lines=st.lists(line, max_size=30),
    after=st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<a@b>\r\n"]),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=8),
    max_size=st.one_of(st.none(), st.integers(min_value=1, max_value=3000)),
)
def test_same_as_aiosmtpd(
    lines: list[bytes], after: bytes, cuts: list[int], max_size: int | None
) -> None:
    stream = b"".join(ln + b"\r\n" for ln in lines) + b".\r\n" + after
    cuts = sorted({c for c in cuts if c < len(stream)})
    expected = reference(stream, max_size)
    assert asyncio.run(run(stream, cuts, max_size)) == expected


def test_empty_body_and_dot_lines() -> None:
    assert asyncio.run(run(b".\r\nQUIT\r\n", [1, 2], None)) == (DataResult(b""), b"QUIT\r\n")
    body = b"..\r\n.hidden\r\nend\r\n.\r\n"
    assert asyncio.run(run(body, [3, 4], None))[0] == DataResult(b".\r\nhidden\r\nend\r\n")
