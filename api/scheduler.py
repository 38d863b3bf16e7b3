"""The micro-batcher's scheduler: pure decisions, no I/O, no clock of its own.

It decides which queued requests go into the next batch and when, in the
manner of a serving engine's scheduler: the caller passes the time in, so
every rule is unit-tested with a fake clock (tests/test_scheduler.py).

Rules:
- The queue is bounded in options (`max_queue_options`): a request that
  does not fit is refused (the front end answers 503 with Retry-After),
  never dropped silently.  A request larger than the whole queue is still
  accepted when the queue is empty, so no request is refused for its size
  alone (the body-size limit bounds it).
- A batch is due when the queued options reach `max_batch_options`, or
  `max_delay` seconds after the oldest queued request arrived, whichever
  comes first; `max_delay == 0` turns coalescing off: each batch is due at
  once and holds one request (or one slice of it).
- A batch holds at most `max_batch_options` options, taken in arrival
  order; a request larger than that is split into slices over successive
  batches, so its rows are priced in order and none is lost.
- A request whose deadline has passed before any of its rows went into a
  batch is expired (the front end answers 504); a request already being
  priced is finished.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple


class Admission(Enum):
    ACCEPTED = "accepted"
    QUEUE_FULL = "queue_full"


class Slice(NamedTuple):
    """Rows [start, stop) of request `key`, placed at [offset, offset + stop - start)
    of the batch.  (Named tuples: built per request per batch, frozen
    dataclasses cost several times more to construct.)"""

    key: int
    start: int
    stop: int
    offset: int

    @property
    def size(self) -> int:
        return self.stop - self.start


class Batch(NamedTuple):
    slices: tuple[Slice, ...]

    @property
    def size(self) -> int:
        return sum(s.size for s in self.slices)


@dataclass(slots=True)
class _Pending:
    key: int
    n: int
    arrived: float
    deadline: float
    taken: int = 0  # rows already placed in batches

    @property
    def left(self) -> int:
        return self.n - self.taken


@dataclass
class Scheduler:
    """Queue of requests, counted in options; see the module docstring."""

    max_batch_options: int
    max_delay: float
    max_queue_options: int
    _queue: deque[_Pending] = field(default_factory=deque)
    _queued_options: int = 0

    def __post_init__(self) -> None:
        if self.max_batch_options < 1 or self.max_queue_options < 1 or self.max_delay < 0:
            raise ValueError("max_batch_options and max_queue_options must be >= 1, "
                             "max_delay >= 0")

    @property
    def queued_options(self) -> int:
        """Options waiting (not yet in a batch)."""
        return self._queued_options

    @property
    def queued_requests(self) -> int:
        return len(self._queue)

    @property
    def oldest_arrival(self) -> float | None:
        """When the oldest queued request arrived, or None when nothing is
        queued: among several queues due at once, the oldest goes first."""
        return self._queue[0].arrived if self._queue else None

    def offer(self, key: int, n: int, now: float, deadline: float) -> Admission:
        """Queue request `key` of `n` options (n >= 1), if it fits."""
        if n < 1:
            raise ValueError("a request has at least one option")
        if self._queue and self._queued_options + n > self.max_queue_options:
            return Admission.QUEUE_FULL
        self._queue.append(_Pending(key, n, now, deadline))
        self._queued_options += n
        return Admission.ACCEPTED

    def due_in(self, now: float) -> float | None:
        """Seconds until the next batch is due (0 if it is due now), or None
        when nothing is queued."""
        if not self._queue:
            return None
        if self.max_delay == 0 or self._queued_options >= self.max_batch_options:
            return 0.0
        return max(0.0, self._queue[0].arrived + self.max_delay - now)

    def expire(self, now: float) -> list[int]:
        """Remove and return the keys of queued requests whose deadline has
        passed and none of whose rows is in a batch yet."""
        gone = [p for p in self._queue if p.taken == 0 and p.deadline <= now]
        if gone:
            keys = {p.key for p in gone}
            self._queue = deque(p for p in self._queue if p.key not in keys)
            self._queued_options -= sum(p.n for p in gone)
        return [p.key for p in gone]

    def next_batch(self, now: float) -> Batch | None:
        """The next batch if one is due at `now`, else None."""
        wait = self.due_in(now)
        if wait is None or wait > 0:
            return None
        slices: list[Slice] = []
        room = self.max_batch_options
        offset = 0
        while self._queue and room > 0:
            head = self._queue[0]
            take = min(head.left, room)
            slices.append(Slice(head.key, head.taken, head.taken + take, offset))
            head.taken += take
            offset += take
            room -= take
            self._queued_options -= take
            if head.left == 0:
                self._queue.popleft()
            if self.max_delay == 0:
                break
        return Batch(tuple(slices))
