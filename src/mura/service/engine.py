"""Run model work off the event loop with bounded concurrency, so load never turns into unbounded memory.

Two stages, each with its own cap (`Admission`): receiving bodies (the app caps how many at once) and
model work. A request takes an inference slot only once its body is in memory, so clients that upload
slowly hold no slot the model could be using. There are `workers` threads running jobs and
`max_queue` requests allowed to wait for one; when every slot is taken the request is refused at once
with 503 and a Retry-After estimated from recent job times. Memory stays bounded by
(bodies being read + workers + max_queue) x the upload limit.

Grad-CAM hooks the shared model's target layer, so a forward pass from another thread while a CAM
is being computed would leak into it. `ModelGate` lets predictions run together but gives a CAM the
model to itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from mura.service.errors import busy

T = TypeVar("T")


class ModelGate:
    """A readers-writer lock: many `shared()` holders at once, or one `exclusive()` holder."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Admission:
    """At most `capacity` requests inside at once; one more is refused with 503 at once, never queued.

    Only touched from the event loop thread, so a plain counter suffices.
    """

    def __init__(self, capacity: int, retry_after: Callable[[], int]) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.in_use = 0
        self._retry_after = retry_after

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.in_use >= self.capacity:
            raise busy(self._retry_after())
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


class InferenceEngine:
    """A thread pool of `workers` plus an admission count of `workers + max_queue` requests."""

    def __init__(self, workers: int = 1, max_queue: int = 8) -> None:
        if workers < 1 or max_queue < 0:
            raise ValueError("workers must be >= 1 and max_queue >= 0")
        self.workers = workers
        self.capacity = workers + max_queue
        self.gate = ModelGate()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mura-infer")
        self._admission = Admission(self.capacity, self.retry_after)
        self._job_seconds = 0.5  # running mean of job time, for Retry-After

    @property
    def admitted(self) -> int:
        """Requests holding a slot now (running or waiting for a worker)."""
        return self._admission.in_use

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead divided among the workers."""
        return max(1, math.ceil(self._job_seconds * self.capacity / self.workers))

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold one of the `capacity` places for a request's model work, or refuse with 503 now."""
        return self._admission.slot()

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run `fn` on a worker thread and await its result without blocking the event loop."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        finally:
            elapsed = time.perf_counter() - started
            self._job_seconds = 0.8 * self._job_seconds + 0.2 * elapsed

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
