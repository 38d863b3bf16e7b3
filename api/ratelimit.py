"""Rate limits per API key (per client address without keys), with `limits`.

Moving-window limits such as ``"100/second;5000/minute"``; in memory by
default, or in Redis (``GPU_PRICER_RATE_LIMIT_STORAGE_URL=redis://host:6379``)
so that several replicas share them.  Over the limit: 429 with Retry-After.
"""

from __future__ import annotations

import math
import time

from fastapi import HTTPException, Request
from limits import parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

NAMESPACE = "gpu-pricer"


class RateLimiter:
    def __init__(self, spec: str, storage_url: str = "memory://") -> None:
        self.items = parse_many(spec) if spec.strip() else []
        url = storage_url if storage_url.startswith("async+") else f"async+{storage_url}"
        self._limiter = MovingWindowRateLimiter(storage_from_string(url)) if self.items else None

    async def retry_after(self, identity: str) -> float | None:
        """Seconds until `identity` may call again, or None when this call is allowed
        (and counted)."""
        if self._limiter is None:
            return None
        for item in self.items:
            if not await self._limiter.hit(item, NAMESPACE, identity):
                stats = await self._limiter.get_window_stats(item, NAMESPACE, identity)
                return max(0.0, stats.reset_time - time.time())
        return None


async def enforce(request: Request) -> None:
    """FastAPI dependency, after `authenticate`: 429 when the caller is over its limit."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None or not limiter.items:
        return
    client = request.client.host if request.client else "unknown"
    identity = getattr(request.state, "key_id", None) or f"addr:{client}"
    wait = await limiter.retry_after(identity)
    if wait is not None:
        raise HTTPException(429, detail="rate limit exceeded",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})
