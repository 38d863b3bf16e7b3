"""The micro-batcher's scheduler with a fake clock: coalescing, size and delay
triggers, splitting, bounded queue, deadlines, order."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.scheduler import Admission, Scheduler

FAR = 1e9  # a deadline that never passes


def test_coalesces_until_the_delay_has_passed() -> None:
    s = Scheduler(max_batch_options=100, max_delay=0.002, max_queue_options=1000)
    assert s.due_in(0.0) is None
    assert s.offer(1, 10, now=0.0, deadline=FAR) is Admission.ACCEPTED
    assert s.offer(2, 5, now=0.001, deadline=FAR) is Admission.ACCEPTED
    assert s.due_in(0.001) == pytest.approx(0.001)
    assert s.next_batch(0.0015) is None
    batch = s.next_batch(0.002)
    assert batch is not None
    assert [(x.key, x.start, x.stop, x.offset) for x in batch.slices] == [(1, 0, 10, 0),
                                                                          (2, 0, 5, 10)]
    assert batch.size == 15
    assert s.queued_options == 0 and s.due_in(0.003) is None


def test_full_batch_is_due_at_once() -> None:
    s = Scheduler(max_batch_options=10, max_delay=1.0, max_queue_options=1000)
    s.offer(1, 6, now=0.0, deadline=FAR)
    assert s.due_in(0.0) == 1.0
    s.offer(2, 6, now=0.0, deadline=FAR)
    assert s.due_in(0.0) == 0.0
    first = s.next_batch(0.0)
    assert first is not None
    assert [(x.key, x.start, x.stop) for x in first.slices] == [(1, 0, 6), (2, 0, 4)]
    # the rest of request 2 waits for the delay again, from its arrival
    assert s.queued_options == 2
    assert s.next_batch(0.5) is None
    second = s.next_batch(1.0)
    assert second is not None
    assert [(x.key, x.start, x.stop, x.offset) for x in second.slices] == [(2, 4, 6, 0)]


def test_large_request_is_split_in_order_not_refused() -> None:
    s = Scheduler(max_batch_options=4, max_delay=0.0, max_queue_options=5)
    assert s.offer(7, 11, now=0.0, deadline=FAR) is Admission.ACCEPTED
    parts = []
    while (batch := s.next_batch(0.0)) is not None:
        parts.extend((x.start, x.stop) for x in batch.slices)
        assert batch.size <= 4
    assert parts == [(0, 4), (4, 8), (8, 11)]


def test_bounded_queue_refuses_visibly() -> None:
    s = Scheduler(max_batch_options=100, max_delay=0.01, max_queue_options=20)
    assert s.offer(1, 15, now=0.0, deadline=FAR) is Admission.ACCEPTED
    assert s.offer(2, 6, now=0.0, deadline=FAR) is Admission.QUEUE_FULL
    assert s.offer(3, 5, now=0.0, deadline=FAR) is Admission.ACCEPTED
    assert s.queued_options == 20 and s.queued_requests == 2


def test_no_coalescing_when_delay_is_zero() -> None:
    s = Scheduler(max_batch_options=100, max_delay=0.0, max_queue_options=1000)
    s.offer(1, 3, now=0.0, deadline=FAR)
    s.offer(2, 4, now=0.0, deadline=FAR)
    assert s.due_in(0.0) == 0.0
    first, second = s.next_batch(0.0), s.next_batch(0.0)
    assert first is not None and [x.key for x in first.slices] == [1]
    assert second is not None and [x.key for x in second.slices] == [2]


def test_deadlines_expire_only_untouched_requests() -> None:
    s = Scheduler(max_batch_options=4, max_delay=0.001, max_queue_options=100)
    s.offer(1, 6, now=0.0, deadline=0.5)
    s.offer(2, 2, now=0.0, deadline=0.5)
    s.offer(3, 2, now=0.0, deadline=5.0)
    batch = s.next_batch(0.0)
    assert batch is not None and [x.key for x in batch.slices] == [1]
    assert s.expire(1.0) == [2]  # 1 is half priced: it is finished, not expired
    assert s.queued_options == 2 + 2
    rest = s.next_batch(1.0)
    assert rest is not None
    assert [(x.key, x.start, x.stop) for x in rest.slices] == [(1, 4, 6), (3, 0, 2)]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Scheduler(max_batch_options=0, max_delay=0.0, max_queue_options=1)
    with pytest.raises(ValueError):
        Scheduler(max_batch_options=1, max_delay=-1.0, max_queue_options=1)


def test_oldest_arrival_is_the_head_of_the_queue() -> None:
    s = Scheduler(max_batch_options=4, max_delay=0.0, max_queue_options=100)
    assert s.oldest_arrival is None
    s.offer(1, 6, now=1.0, deadline=FAR)
    s.offer(2, 1, now=2.0, deadline=FAR)
    assert s.oldest_arrival == 1.0
    s.next_batch(3.0)  # rows 0-3 of request 1: it is still waiting, and still the oldest
    assert s.oldest_arrival == 1.0
    s.next_batch(3.0)
    assert s.oldest_arrival == 2.0
    s.next_batch(3.0)
    assert s.oldest_arrival is None


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 50), min_size=1, max_size=30),
       batch=st.integers(1, 64), delay=st.sampled_from([0.0, 0.001, 0.01]))
def test_every_row_is_batched_once_in_order(sizes: list[int], batch: int, delay: float) -> None:
    s = Scheduler(max_batch_options=batch, max_delay=delay, max_queue_options=10**6)
    now = 0.0
    for key, n in enumerate(sizes):
        assert s.offer(key, n, now=now, deadline=FAR) is Admission.ACCEPTED
        now += 0.0005
    seen: dict[int, list[tuple[int, int]]] = {}
    order: list[int] = []
    while s.queued_options:
        wait = s.due_in(now)
        assert wait is not None
        now += wait
        b = s.next_batch(now)
        assert b is not None and 0 < b.size <= batch
        offset = 0
        for x in b.slices:
            assert x.offset == offset
            offset += x.size
            seen.setdefault(x.key, []).append((x.start, x.stop))
            if not order or order[-1] != x.key:
                order.append(x.key)
    assert order == list(range(len(sizes)))
    for key, n in enumerate(sizes):
        spans = seen[key]
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
