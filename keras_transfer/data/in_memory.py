"""In memory or streamed: whether a run holds its decoded images or leaves them as files.
"""

from __future__ import annotations

import dataclasses
import logging

from keras_transfer.data.image_sets import _size
from keras_transfer.data.streaming import memory_budget

logger = logging.getLogger(__name__)
IN_MEMORY = ("auto", "yes", "no")


@dataclasses.dataclass
class RunCost:
    """What a run does with its images, for ``in_memory="auto"`` to weigh (see :func:`streams`)."""

    kept_per_image: int = 0  # bytes of features the run keeps in memory for each image (its feature cache)
    read_once: bool = False  # every stage trains on cached features: each image is decoded once, then never again
    workers: int = 1  # the processes of a cluster: in memory, each decodes every image


# Past this many bytes of decoded pixels, a run that reads each image once streams them: held in
# memory they would buy nothing (measured, 16,000 images of 128 px, features cached pooled: peak RSS
# 2.1 GB and 167 s in memory, 1.4 GB and 106 s streamed; benchmarks/bench_scale.py).
READ_ONCE_IN_MEMORY_MAX = 512 * 2**20


def streams(in_memory: str, n_images: int, image_size, what: str, cost: RunCost | None = None) -> bool:
    """Whether ``n_images`` at ``image_size`` stay files: ``in_memory`` "no", or "auto" and

    - what the run would hold in memory (the decoded pixels and ``cost.kept_per_image`` bytes of
      features each) takes more than :func:`~keras_transfer.data.streaming.memory_budget`; or
    - ``cost.workers`` > 1: held in memory, every worker would decode every image, streamed each
      decodes its share; or
    - ``cost.read_once`` and the pixels take more than :data:`READ_ONCE_IN_MEMORY_MAX`.
    """
    if in_memory not in IN_MEMORY:
        raise ValueError(f"in_memory must be one of {', '.join(IN_MEMORY)}. Received: in_memory={in_memory!r}")
    if in_memory != "auto":
        return in_memory == "no"
    cost = cost or RunCost()
    h, w = _size(image_size)
    pixels, features, budget = n_images * h * w * 3, n_images * int(cost.kept_per_image), memory_budget()
    logger.info("%s: %d images at %dx%d take %.2f GiB decoded, their cached features %.2f GiB; half the memory "
                "available is %.1f GiB", what, n_images, h, w, pixels / 2**30, features / 2**30, budget / 2**30)
    if pixels + features > budget:
        why = "more than half the memory available"
    elif cost.workers > 1:
        why = f"each of the {cost.workers} workers then decodes only its share"
    elif cost.read_once and pixels > READ_ONCE_IN_MEMORY_MAX:
        why = ("every stage trains on cached features, so each image is decoded once: held in memory the pixels "
               "would buy nothing")
    else:
        return False
    logger.info("%s: %s: streaming them from their files (in_memory='yes' holds them anyway)", what, why)
    return True



