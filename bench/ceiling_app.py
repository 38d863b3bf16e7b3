"""The bare-FastAPI ceiling of the service benchmark (bench/service.py).

One FastAPI app with the service's route, ``POST /v1/price``, that parses the
request body with the service's own pydantic model (`api.schemas.PriceRequest`)
and answers with fixed bytes: the response the service gave for the same body,
captured once by the bench.  No middleware, no authentication or rate-limit
dependencies, no micro-batcher, no pricing, no response serialisation: what is
left is what FastAPI and uvicorn cost for the request in an app written the
usual way (the body a pydantic parameter).  The service decodes the same body
a few microseconds faster (msgspec, `api.jsonio`), so its ratio to this
ceiling holds that small advantage too.

The bare transfer, ``POST /v1/transfer``: reads the whole body (any content
type) and answers as many bytes as its ``X-Answer-Bytes`` header asks for:
the bench's floor for the bulk Arrow request, moving the same bytes both ways
with no pricing.  The process keeps freed memory as the service does
(`api.memory`), so a bulk body costs it what it costs the service.

It runs under uvicorn exactly as ``python -m api`` runs the service: the same
`uvicorn.run` keywords (one worker, uvicorn's default event loop and HTTP
implementation) and the same logging configuration (`api.__main__.log_config`).

Run: ``python -m bench.ceiling_app --port PORT --response FILE
[--media-type TYPE]``; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from api.memory import keep_freed_memory
from api.schemas import PriceRequest

HOST = "127.0.0.1"
TRANSFER_PATH = "/v1/transfer"
ANSWER_BYTES_HEADER = "X-Answer-Bytes"
#: The most bytes the transfer route answers.
MAX_ANSWER_BYTES = 1 << 31


def create_app(payload: bytes, media_type: str = "application/json") -> FastAPI:
    """The ceiling app: every valid PriceRequest gets `payload` back."""
    app = FastAPI(title="gpu-pricer bench ceiling")

    @app.post("/v1/price")
    async def price(body: PriceRequest) -> Response:
        return Response(payload, media_type=media_type)

    answers: dict[int, bytes] = {}  # zero bytes of each size asked for, made once

    @app.post(TRANSFER_PATH)
    async def transfer(request: Request) -> Response:
        body = await request.body()
        del body
        raw = request.headers.get(ANSWER_BYTES_HEADER, "0")
        size = int(raw) if raw.isascii() and raw.isdigit() else -1
        if not 0 <= size <= MAX_ANSWER_BYTES:
            return JSONResponse({"detail": f"{ANSWER_BYTES_HEADER}: 0 to {MAX_ANSWER_BYTES}"},
                                status_code=422)
        if size not in answers:
            answers.clear()
            answers[size] = bytes(size)
        return Response(answers[size], media_type="application/octet-stream")

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return JSONResponse({"ready": True})

    return app


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    from api.__main__ import log_config

    parser = argparse.ArgumentParser(prog="python -m bench.ceiling_app",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--response", type=Path, required=True,
                        help="file holding the response body to serve")
    parser.add_argument("--media-type", default="application/json")
    args = parser.parse_args(argv)
    app = create_app(args.response.read_bytes(), args.media_type)
    keep_freed_memory()  # as the service does at start-up (its default)
    # the keywords python -m api passes (api/__main__.py), loop and http left at "auto"
    uvicorn.run(app, host=HOST, port=args.port, workers=1, log_config=log_config())
    return 0


if __name__ == "__main__":
    sys.exit(main())
