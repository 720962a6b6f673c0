"""Join concurrent requests into one model call (TF Serving's ``--enable_batching``).

A model answers 32 images in one call much faster than in 32 calls (the per-call cost of a
graph on a CPU is paid once). :class:`Batcher` queues the requests that arrive while a batch
runs and sends the next ones together: up to ``max_batch_size`` examples, waiting at most
``timeout`` seconds for more once the first has come. Only requests whose examples have the
same shape can share a call (two images of different sizes cannot be stacked), so a batch is
split into groups by shape. A call that fails (one undecodable image fails the whole call) is
repeated request by request, so only the request at fault gets the error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


def _rows(arrays: Arrays) -> int:
    return len(next(iter(arrays.values())))


def _shape_key(arrays: Arrays):
    return tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(arrays.items()))


def _split(outputs: Arrays, sizes: list[int]) -> list[Arrays]:
    bounds = np.cumsum([0, *sizes])
    return [{k: v[a:b] for k, v in outputs.items()} for a, b in zip(bounds[:-1], bounds[1:])]


class Batcher:
    """``await batcher(arrays)`` gives ``run(arrays)``, computed in a batch with other callers'.

    Args:
        run: the blocking model call, ``{input: array (N, ...)} -> {output: array (N, ...)}``.
        executor: where ``run`` is called (off the event loop).
        max_batch_size: most examples in one call (a larger request runs alone, whole).
        timeout: seconds to wait for more requests once one is queued.
    """

    def __init__(self, run: Callable[[Arrays], Arrays], executor, max_batch_size: int = 32, timeout: float = 0.002):
        self.run, self.executor = run, executor
        self.max_batch_size, self.timeout = max_batch_size, timeout
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.carried = None  # a request that did not fit in the last batch: first in the next
        self.calls = 0  # model calls made, for tests and logs

    async def __call__(self, arrays: Arrays) -> Arrays:
        if self.worker is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((arrays, future))
        return await future

    async def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)

    async def _next_batch(self) -> list:
        first, self.carried = self.carried, None
        batch = [first if first is not None else await self.queue.get()]
        rows = _rows(batch[0][0])
        deadline = asyncio.get_running_loop().time() + self.timeout
        while rows < self.max_batch_size:
            left = deadline - asyncio.get_running_loop().time()
            try:
                item = self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if rows + _rows(item[0]) > self.max_batch_size:
                self.carried = item
                break
            batch.append(item)
            rows += _rows(item[0])
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            groups: dict = {}
            for item in batch:
                groups.setdefault(_shape_key(item[0]), []).append(item)
            for items in groups.values():
                await self._run_group(loop, items)

    async def _run_group(self, loop, items) -> None:
        live = [(a, f) for a, f in items if not f.done()]  # a caller that went away is not computed
        if not live:
            return
        sizes = [_rows(a) for a, _ in live]
        joined = {k: np.concatenate([a[k] for a, _ in live]) for k in live[0][0]}
        try:
            self.calls += 1
            outputs = await loop.run_in_executor(self.executor, self.run, joined)
        except Exception as err:  # noqa: BLE001 - find the request at fault, answer the others
            if len(live) == 1:
                if not live[0][1].done():
                    live[0][1].set_exception(err)
            else:
                for arrays, future in live:
                    await self._run_one(loop, arrays, future)
            return
        for (_, future), part in zip(live, _split(outputs, sizes)):
            if not future.done():
                future.set_result(part)

    async def _run_one(self, loop, arrays, future) -> None:
        try:
            self.calls += 1
            result = await loop.run_in_executor(self.executor, self.run, arrays)
        except Exception as err:  # noqa: BLE001 - the caller gets its own error
            if not future.done():
                future.set_exception(err)
            return
        if not future.done():
            future.set_result(result)
