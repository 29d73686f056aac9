"""A bounded, order-preserving parallel map for object transfers.

Snapshots must write their index in listing order while transfers finish in any order;
restores stream an index of any length.  :func:`ordered_map` runs ``fn`` on at most
``workers`` items at once, keeps at most ``window`` items submitted ahead of the consumer,
and yields results in input order: memory is bounded by the window, never by the input.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Done:
    """A finished result that needed no thread (keeps the order of the window)."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


def ordered_map(
    fn: Callable[[T], R | None],
    items: Iterable[T],
    *,
    workers: int,
    window: int | None = None,
    inline: Callable[[T], bool] | None = None,
) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item))`` in input order, running ``fn`` in ``workers`` threads.

    Items for which ``inline(item)`` is true are not sent to a thread: ``fn`` runs in the
    calling thread when they reach the window (cheap work, such as reusing a previous
    record, costs no thread hand-off).  An exception raised by ``fn`` propagates when its
    item's turn comes; leaving the iteration early cancels what has not started.

    Closed in the thread that iterates it, the generator waits for the running transfers.
    Finalized anywhere else (the garbage collector runs a forgotten generator's ``finally``
    in whatever thread allocates at that moment, such as an S3 transfer thread a worker is
    waiting on), it only cancels and does not wait: waiting there can deadlock.
    """
    window = window or workers * 8
    owner = threading.current_thread()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drbackup-transfer")
    pending: deque[tuple[T, Future | _Done]] = deque()
    try:
        for item in items:
            if inline is not None and inline(item):
                pending.append((item, _Done(fn(item))))
            else:
                pending.append((item, pool.submit(fn, item)))
            while len(pending) >= window or (pending and _ready(pending[0][1])):
                head, future = pending.popleft()
                yield head, future.result()
        while pending:
            head, future = pending.popleft()
            yield head, future.result()
    finally:
        pool.shutdown(wait=threading.current_thread() is owner, cancel_futures=True)


def _ready(future) -> bool:
    return isinstance(future, _Done) or future.done()
