"""Bulk request bodies read into one buffer.

Starlette's ``Request.body()`` keeps every chunk the server hands over and
joins them at the end: for a bulk Arrow body that is two copies of it alive
at once, and the join (milliseconds for tens of megabytes) runs on the event
loop in one piece.  `read_body` copies each chunk, as it arrives, into one
buffer of the body's ``Content-Length`` taken from the library's buffer pool
(memory an earlier body or answer already mapped), so the body exists once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import HTTPException, Request

from gpu_pricer import buffers


async def read_body(request: Request) -> Any:
    """The request's body as a bytes-like object: a uint8 NumPy array of its
    Content-Length filled chunk by chunk, or (no Content-Length: the body was
    counted and joined by `api.middleware.BodyLimit` already) Starlette's
    bytes.  400 when the body's length differs from its Content-Length."""
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        return await request.body()
    size = int(length)
    buf = buffers.OUTPUTS.bytes(size)
    pos = 0
    async for chunk in request.stream():
        end = pos + len(chunk)
        if end > size:
            break
        buf[pos:end] = np.frombuffer(chunk, np.uint8)
        pos = end
    else:
        if pos == size:
            return buf
    raise HTTPException(400, detail=f"body length differs from its Content-Length ({size})")
