"""Request bodies read chunk by chunk into one pooled buffer (`api.bodies`)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import pytest
from fastapi import HTTPException
from starlette.requests import Request

from api.bodies import read_body


def _request(chunks: list[bytes], length: int | None) -> Request:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": headers}
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return Request(scope, receive)


def _read(chunks: list[bytes], length: int | None) -> Any:
    return asyncio.run(read_body(_request(chunks, length)))


def test_a_body_is_its_chunks_in_order_in_one_buffer() -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 5 << 20, dtype=np.uint8).tobytes()  # pooled size
    cuts = [0, 1, 65_536, 65_537, 3_000_000, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(cuts)]
    body = _read(chunks, len(data))
    assert isinstance(body, np.ndarray) and body.dtype == np.uint8
    assert body.tobytes() == data
    assert bytes(_read([b"ab", b"", b"c"], 3)) == b"abc"  # small, empty chunks too
    assert bytes(_read([b""], 0)) == b""


def test_without_a_content_length_the_joined_bytes() -> None:
    assert _read([b"ab", b"cd"], None) == b"abcd"


@pytest.mark.parametrize(("chunks", "length"), [([b"abc", b"d"], 3), ([b"ab"], 3)])
def test_a_body_of_another_length_than_declared_is_a_400(chunks: list[bytes],
                                                         length: int) -> None:
    with pytest.raises(HTTPException) as exc:
        _read(chunks, length)
    assert exc.value.status_code == 400 and "Content-Length" in str(exc.value.detail)
