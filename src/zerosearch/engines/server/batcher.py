"""Where engine calls run, off the event loop: a worker pool, or the micro-batcher for the simulator.

The in-process simulator runs one `generate` at a time and a batch of prompts costs far less per prompt
than prompts one by one (bench/engines.py), so `MicroBatcher` merges the queries of requests that arrive
together into one `engine.search` call; other engines get a request per worker thread (`Pool`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from zerosearch.engines import Counters
from zerosearch.engines.base import Document, SearchEngine, SearchRequest

DEFAULT_WORKERS = 32
DEFAULT_BATCH_WINDOW_MS = 10.0  # what `batch_window_ms=None` means for the simulator


def checked_search(engine: SearchEngine, requests: list[SearchRequest]) -> list[list[Document]]:
    """`engine.search`, refusing an answer that does not have one result list per request."""
    results = engine.search(requests)
    if len(results) != len(requests):
        raise RuntimeError(f"engine returned {len(results)} result lists for {len(requests)} requests")
    return results


@dataclass
class _Job:
    requests: list[SearchRequest]
    future: Future[list[list[Document]]]
    timing: dict[str, float] = field(default_factory=dict)  # "start"/"end" of its engine call (perf_counter)


class MicroBatcher:
    """One thread that runs `engine.search` on the merged queries of requests that arrive together.

    A batch starts with the oldest waiting job and takes more for up to `window_s`, stopping early at
    `max_batch` queries (a job that would overflow the batch starts the next one; a job larger than
    `max_batch` runs alone). A job whose future was cancelled (its client hung up) is left out when the
    batch closes. If the merged call raises ValueError, i.e. the engine refused some request's input,
    each job is retried on its own so one bad request fails only its own client; other errors are
    engine failures and fail the whole batch.
    """

    def __init__(self, engine: SearchEngine, *, window_s: float, max_batch: int):
        if not window_s >= 0 or max_batch < 1:
            raise ValueError(f"need batch window >= 0 and max_batch >= 1, got {window_s}, {max_batch}")
        self.engine, self.window_s, self.max_batch = engine, window_s, max_batch
        self.counters = Counters(engine_calls=0, batched_queries=0, dropped_jobs=0)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, requests: list[SearchRequest], timing: dict[str, float] | None = None
               ) -> Future[list[list[Document]]]:
        """Queue `requests`; `timing` (if given) gets the "start" and "end" of the engine call."""
        job = _Job(requests, Future(), timing if timing is not None else {})
        with self._lock:
            # Started on demand, so the app keeps working after a lifespan shutdown closed it (TestClient).
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="zerosearch-batcher", daemon=True)
                self._thread.start()
            self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Finish the jobs already submitted, then stop the thread."""
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(timeout=60)
                self._thread = None

    def _run(self) -> None:
        carry: _Job | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None:
                return
            batch, size, stop = [first], len(first.requests), False
            deadline = time.monotonic() + self.window_s
            while size < self.max_batch:
                remaining = deadline - time.monotonic()
                try:  # past the window, still take what queued up while the engine was busy
                    job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                if size + len(job.requests) > self.max_batch:
                    carry = job
                    break
                batch.append(job)
                size += len(job.requests)
            # A client that hung up has cancelled its future: leave its queries out.
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]
            self.counters.add(dropped_jobs=len(batch) - len(live))
            self._execute(live)
            if stop:
                return

    def _execute(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        requests = [r for j in jobs for r in j.requests]
        start = time.perf_counter()
        try:
            self.counters.add(engine_calls=1, batched_queries=len(requests))
            results = checked_search(self.engine, requests)
        except ValueError as e:
            if len(jobs) == 1:
                jobs[0].future.set_exception(e)
            else:
                for j in jobs:
                    self._execute([j])
            return
        except Exception as e:  # delivered to every waiting request, which answers 502
            for j in jobs:
                j.future.set_exception(e)
            return
        end, first = time.perf_counter(), 0
        for j in jobs:
            j.timing.update(start=start, end=end)
            j.future.set_result(results[first: first + len(j.requests)])
            first += len(j.requests)

    def stats(self) -> dict[str, Any]:
        c = self.counters.snapshot()
        return {**c, "mean_batch_queries": c["batched_queries"] / c["engine_calls"] if c["engine_calls"] else 0.0}


class Pool:
    """A thread pool created on demand and closed with the app's lifespan (as MicroBatcher)."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="zerosearch-search")
            return self._pool.submit(fn, *args)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
