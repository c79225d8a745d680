"""Capture formatting without sockets: names, header blocks, decoders, the stream encoder."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import brotli
import pytest
import zstandard

from logproxy.capture.decode import CappedDecoder, DecodeError, make_decoder
from logproxy.capture.encoder import PROBE_LIMIT, StreamEncoder
from logproxy.capture.model import (
    CaptureName,
    StreamHead,
    header_block,
    parse_rfc3339,
    redact,
    rfc3339,
    stream_document,
)
from logproxy.proxy.headers import forwardable

BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}' * 200


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


ENCODINGS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
    "gzip, br": lambda d: brotli.compress(gzip.compress(d)),
}


# ---------------------------------------------------------------- names and blocks


def test_file_names_share_the_request_start_time() -> None:
    started = parse_rfc3339("2025-09-13T02:11:09.123999Z")
    names = [
        CaptureName("092d0424-aaaa-bbbb-cccc-000000000000", started, kind)
        for kind in ("request", "response")
    ]
    assert [n.bin_name for n in names] == [
        "2025-09-13_02-11-09.123_092d0424-aaaa-bbbb-cccc-000000000000_request.bin",
        "2025-09-13_02-11-09.123_092d0424-aaaa-bbbb-cccc-000000000000_response.bin",
    ]
    assert names[0].metadata_name.endswith("_request_metadata.json")
    assert names[0].folder == "2025-09-13"


def test_rfc3339_round_trip() -> None:
    ts = 1757729469.123456
    assert rfc3339(ts) == "2025-09-13T02:11:09.123456Z"
    assert parse_rfc3339(rfc3339(ts)) == pytest.approx(ts)
    assert parse_rfc3339("2025-09-13T04:11:09.123456+02:00") == pytest.approx(ts)
    for bad in ("2025-09-13T02:11:09", "yesterday", None, 5):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)


def test_header_block_redacts_and_keeps_repeats() -> None:
    block = header_block(
        b"POST http://h/v1/x HTTP/1.1",
        [
            (b"Authorization", b"Bearer sk-0123456789abcdefghijklmn"),
            (b"X-A", b"1"),
            (b"X-A", b"2"),
            (b"Cookie", b"short"),
        ],
        frozenset({b"authorization", b"cookie"}),
        [(b"X-Proxy-Path", b"http://localhost:5601/lm/x")],
    )
    assert block == (
        b"POST http://h/v1/x HTTP/1.1\r\n"
        b"Authorization: <redacted>...klmn\r\nX-A: 1\r\nX-A: 2\r\nCookie: <redacted>\r\n"
        b"X-Proxy-Path: http://localhost:5601/lm/x\r\n\r\n"
    )
    assert redact(b"abc") == b"<redacted>"


def test_stream_document_fields() -> None:
    name = CaptureName("092d0424-aaaa-bbbb-cccc-000000000000", 100.0, "response")
    doc = stream_document(
        "response",
        name,
        {"id": name.capture_id},
        started_at=100.0,
        completed_at=100.25,
        bytes_written=7,
        completed=True,
        error=None,
    )
    assert doc["format_version"] == 1 and doc["stream_type"] == "response"
    assert doc["duration_ms"] == 250.0 and doc["bytes_written"] == 7
    assert doc["error"] is None and "error" in doc
    assert doc["filename"] == name.bin_name
    assert doc["started_at"].endswith("Z")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"Connection", [b"close"])], []),
        ([(b"Keep-Alive", [b"1"]), (b"TE", [b"trailers"]), (b"Trailer", [b"x"])], []),
        ([(b"Transfer-Encoding", [b"chunked"]), (b"Upgrade", [b"h2c"])], []),
        ([(b"Proxy-Authorization", [b"x"]), (b"Proxy-Authenticate", [b"y"])], []),
        (
            [
                (b"Connection", [b"X-Hop, x-other"]),
                (b"X-Hop", [b"1"]),
                (b"X-Other", [b"2"]),
                (b"X-Kept", [b"3"]),
            ],
            [(b"X-Kept", b"3")],
        ),
        ([(b"Accept", [b"a", b"b"])], [(b"Accept", b"a"), (b"Accept", b"b")]),
        ([(b"Content-Encoding", [b"gzip"])], [(b"Content-Encoding", b"gzip")]),
    ],
)
def test_hop_by_hop_headers_are_dropped(
    headers: list[tuple[bytes, list[bytes]]], expected: list[tuple[bytes, bytes]]
) -> None:
    assert forwardable(headers) == expected


# ---------------------------------------------------------------- decoders


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_decoders_round_trip_in_any_chunking(encoding: str, step: int) -> None:
    encoded = ENCODINGS[encoding](BODY)
    decoder = make_decoder(encoding)
    assert decoder is not None
    out: list[bytes] = []
    for i in range(0, len(encoded), step):
        decoder.feed(encoded[i : i + step], out.append)
    decoder.finish(out.append)
    assert b"".join(out) == BODY


def test_deflate_falls_back_to_raw() -> None:
    decoder = make_decoder("deflate")
    assert decoder is not None
    out: list[bytes] = []
    decoder.feed(raw_deflate(BODY), out.append)
    decoder.finish(out.append)
    assert b"".join(out) == BODY


def test_gzip_members_are_concatenated() -> None:
    decoder = make_decoder("gzip")
    assert decoder is not None
    out: list[bytes] = []
    decoder.feed(gzip.compress(b"one ") + gzip.compress(b"two"), out.append)
    decoder.finish(out.append)
    assert b"".join(out) == b"one two"


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "deflate"])
def test_truncated_or_corrupt_streams_raise(encoding: str) -> None:
    encoded = ENCODINGS[encoding](BODY)
    for bad in (encoded[: len(encoded) // 2], b"\x00garbage" * 10):
        decoder = make_decoder(encoding)
        assert decoder is not None
        with pytest.raises(DecodeError):
            decoder.feed(bad, lambda _: None)
            decoder.finish(lambda _: None)


def test_unknown_encoding_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="unsupported content-encoding compress"):
        make_decoder("compress")
    assert make_decoder("identity") is None and make_decoder(None) is None


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_decompression_bomb_stops_at_the_cap_in_bounded_pieces(encoding: str) -> None:
    bomb = ENCODINGS[encoding](b"\0" * (64 << 20))
    decoder = make_decoder(encoding)
    assert decoder is not None
    capped = CappedDecoder(decoder, 8 << 20)
    pieces: list[int] = []
    with pytest.raises(DecodeError, match="cap"):
        capped.feed(bomb, lambda data: pieces.append(len(data)))
        capped.finish(lambda data: pieces.append(len(data)))
    assert sum(pieces) <= 8 << 20
    assert max(pieces) <= 8 << 20  # each piece bounded, whatever the ratio


# ---------------------------------------------------------------- the stream encoder


def encode(
    head: StreamHead, chunks: list[bytes], finish: bool = True, cap: int = 1 << 30
) -> tuple[bytes, StreamEncoder]:
    out: list[bytes] = []
    encoder = StreamEncoder(head, frozenset({b"authorization"}), cap, out.append)
    for chunk in chunks:
        encoder.feed(chunk)
    if finish:
        encoder.finish()
    else:
        encoder.abandon()
    data = b"".join(out)
    assert encoder.bytes_out == len(data)
    return data, encoder


def head(encoding: str | None) -> StreamHead:
    headers = [(b"Content-Type", b"application/json")]
    if encoding:
        headers.append((b"Content-Encoding", encoding.encode()))
    return StreamHead(b"HTTP/1.1 200 OK", headers, encoding, [])


def test_identity_body_is_stored_as_is() -> None:
    data, encoder = encode(head(None), [b"abc", b"def"])
    assert data == b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\nabcdef"
    assert encoder.decode_error is None


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "br", "deflate"])
def test_encoded_body_is_stored_decoded_without_content_encoding(encoding: str) -> None:
    encoded = ENCODINGS[encoding](BODY)
    data, encoder = encode(
        head(encoding), [encoded[i : i + 100] for i in range(0, len(encoded), 100)]
    )
    assert data == b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + BODY
    assert encoder.decode_error is None


def test_undecodable_body_is_stored_as_received_with_the_error() -> None:
    data, encoder = encode(head("gzip"), [b"plain", b" text"])
    block, _, body = data.partition(b"\r\n\r\n")
    assert body == b"plain text"
    assert b"Content-Encoding: gzip" in block
    assert b"X-Decompression-Error: " in block
    assert encoder.decode_error


def test_unsupported_encoding_is_stored_as_received() -> None:
    data, _ = encode(head("compress"), [b"\x1f\x9dxyz"])
    assert b"X-Decompression-Error: unsupported content-encoding compress" in data
    assert data.endswith(b"\x1f\x9dxyz")


def test_corruption_after_the_head_keeps_the_raw_remainder() -> None:
    good = gzip.compress(BODY)  # decodes into output long before PROBE_LIMIT
    garbage = b"not a second gzip member" * 10
    data, encoder = encode(head("gzip"), [good, garbage])
    block, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Encoding" not in block  # decided on the first output
    assert encoder.decode_error and "rest follows as received" in encoder.decode_error
    assert body == BODY + garbage  # nothing lost


def test_cap_exceeded_mid_stream_keeps_the_raw_remainder() -> None:
    encoded = gzip.compress(b"a" * (4 << 20))
    data, encoder = encode(head("gzip"), [encoded[:200], encoded[200:]], cap=1 << 20)
    assert encoder.decode_error and "cap" in encoder.decode_error
    assert data.endswith(encoded[200:])


def test_truncated_body_while_probing_falls_back() -> None:
    encoded = zstandard.ZstdCompressor().compress(b"x" * 10)
    data, _encoder = encode(head("zstd"), [encoded[:5]])
    assert data.endswith(encoded[:5]) and b"X-Decompression-Error" in data


def test_abandoned_stream_keeps_what_was_decoded() -> None:
    encoded = gzip.compress(BODY)
    data, encoder = encode(head("gzip"), [encoded[: len(encoded) // 2]], finish=False)
    assert encoder.decode_error is None
    assert data.partition(b"\r\n\r\n")[2] and BODY.startswith(data.partition(b"\r\n\r\n")[2])


def test_probe_is_bounded() -> None:
    # zstd with one big block gives no output until the block is complete
    encoded = zstandard.ZstdCompressor(level=1).compress(bytes(range(256)) * 4096)
    out: list[bytes] = []
    encoder = StreamEncoder(head("zstd"), frozenset(), 1 << 30, out.append)
    fed = 0
    while fed < len(encoded) and not out:
        encoder.feed(encoded[fed : fed + 4096])
        fed += 4096
    assert out, "the head is written by the time the probe limit is reached"
    assert fed <= PROBE_LIMIT + 4096


def test_read_document_is_a_dict_or_none(tmp_path: Path) -> None:
    from logproxy.capture.model import read_document

    path = tmp_path / "x_response_metadata.json"
    assert read_document(str(path)) is None  # missing
    for text in ['{"id": "a"', "[1, 2]", "null", "\xff"]:  # half written (never), or not an object
        path.write_text(text, encoding="latin-1")
        assert read_document(str(path)) is None, text
    path.write_text('{"id": "a"}')
    assert read_document(str(path)) == {"id": "a"}
