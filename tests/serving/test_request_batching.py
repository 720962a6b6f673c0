import asyncio
import concurrent.futures
import time

import numpy as np
import pytest

from keras_transfer.serving.request_batching import Batcher


def _run(arrays):
    time.sleep(0.01)  # a model call's fixed cost
    x = arrays["x"]
    if np.any(x < 0):
        raise ValueError("negative input")
    return {"y": x * 2, "n": np.full(len(x), len(x))}


def _gather(batcher, requests):
    async def main():
        try:
            return await asyncio.gather(*(batcher(r) for r in requests), return_exceptions=True)
        finally:
            await batcher.close()
    return asyncio.run(main())


def test_concurrent_requests_share_calls_and_get_their_own_rows():
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        batcher = Batcher(_run, pool, max_batch_size=8, timeout=0.05)
        requests = [{"x": np.array([i, i + 100])} for i in range(12)]
        answers = _gather(batcher, requests)
    for r, a in zip(requests, answers):
        np.testing.assert_array_equal(a["y"], r["x"] * 2)
    assert batcher.calls < len(requests) and max(int(a["n"][0]) for a in answers) == 8  # batches of 4 requests


def test_a_failing_request_fails_alone_and_shapes_are_not_mixed():
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        batcher = Batcher(_run, pool, max_batch_size=32, timeout=0.05)
        requests = [{"x": np.array([1.0])}, {"x": np.array([-1.0])}, {"x": np.ones((1, 2))}, {"x": np.array([3.0])}]
        answers = _gather(batcher, requests)
    assert isinstance(answers[1], ValueError)
    np.testing.assert_array_equal(answers[0]["y"], [2.0])
    np.testing.assert_array_equal(answers[3]["y"], [6.0])
    np.testing.assert_array_equal(answers[2]["y"], [[2.0, 2.0]])


@pytest.mark.parametrize("size", [1, 40])
def test_a_request_above_the_batch_size_runs_whole(size):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answers = _gather(Batcher(_run, pool, max_batch_size=16, timeout=0.0), [{"x": np.arange(size)}] * 3)
    assert all(len(a["y"]) == size for a in answers)
