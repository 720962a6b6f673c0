"""Choosing the tf.distribute strategy: the same command on a CPU, on N GPUs, on N machines.

``strategy_for("auto")`` picks:

- ``TF_CONFIG`` names a cluster of several tasks -> ``MultiWorkerMirroredStrategy``;
- several GPUs -> ``MirroredStrategy`` over them;
- one GPU -> ``OneDeviceStrategy("/gpu:0")``;
- else the default strategy (one CPU device).

``--strategy`` forces one (``default``, ``one_device``, ``mirrored``, ``multi_worker``) and
``--devices`` names the devices to mirror over (``/gpu:0,/gpu:1``; ``/cpu:0,/cpu:1`` works for
logical CPU devices, which is how the tests exercise the mirrored path without a GPU).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import numpy as np

from keras_transfer._utils import supervisor

logger = logging.getLogger(__name__)

WORKER_LOST = ("a worker of the multi-worker cluster stopped or cannot be reached ({error}). Training "
               "cannot go on without it: restart every worker with the same command and TF_CONFIG.")

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")

NO_PEER = ("the other task(s) of the cluster ({peers}) did not answer within {timeout:g} s "
           "(KERAS_TRANSFER_COLLECTIVE_TIMEOUT): start every worker with the same command and TF_CONFIG, "
           "and check their addresses")


def collective_timeout() -> float:
    text = os.environ.get("KERAS_TRANSFER_COLLECTIVE_TIMEOUT", "600")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"KERAS_TRANSFER_COLLECTIVE_TIMEOUT must be a number of seconds above 0. Received: {text!r}")
    return value


def _cluster() -> dict:
    try:
        return json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}); see README 'Several machines'.") from None


def peers() -> list[str]:
    """The addresses of the cluster's other tasks (TF_CONFIG)."""
    config = _cluster()
    me = config.get("task", {})
    return [address for job, addresses in config.get("cluster", {}).items()
            for i, address in enumerate(addresses) if (job, i) != (me.get("type"), me.get("index"))]


def _cluster_size(config: dict) -> int:
    return sum(len(v) for v in config.get("cluster", {}).values())


def _check_devices(devices: list[str]) -> None:
    """Refuse a device this machine does not have (TensorFlow would place the work elsewhere)."""
    import tensorflow as tf

    def key(name: str):
        spec = tf.DeviceSpec.from_string(name)
        return (spec.device_type or "").upper(), spec.device_index or 0

    present = {key(d.name) for d in tf.config.list_logical_devices()}
    for device in devices:
        try:
            wanted = key(device)
        except ValueError:
            wanted = None
        if wanted not in present:
            raise ValueError(f"devices: {device!r} is not a device of this machine (it has "
                             f"{', '.join(sorted(f'/{t.lower()}:{i}' for t, i in present))}). "
                             f"Received: devices={','.join(devices)!r}")


def strategy_for(strategy: str = "auto", devices: str | list | None = None, verbose: bool = True):
    """The tf.distribute strategy for this machine (see the module docstring)."""
    import tensorflow as tf

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; choose one of them. "
                         f"Received: strategy={strategy!r}")
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    if strategy == "auto" and _cluster_size(_cluster()) > 1:
        strategy = "multi_worker"
    # MultiWorkerMirroredStrategy must be created before anything initialises TF's context,
    # so devices are only looked at (physically, which does not initialise it) after that.
    gpus = [] if strategy == "multi_worker" else tf.config.list_physical_devices("GPU")
    if strategy == "auto":
        strategy = _single_machine_strategy(devices, gpus)
    if devices and strategy in ("mirrored", "one_device"):
        _check_devices(devices)
    if strategy == "multi_worker":
        result = _multi_worker_strategy()
    elif strategy == "mirrored":
        result = tf.distribute.MirroredStrategy(devices=devices or None)
    elif strategy == "one_device":
        result = tf.distribute.OneDeviceStrategy((devices or ["/gpu:0" if gpus else "/cpu:0"])[0])
    else:
        result = tf.distribute.get_strategy()
    supervisor.report(supervisor.READY)
    if verbose:
        logger.info(describe_strategy(result))
    return result


def _single_machine_strategy(devices, gpus) -> str:
    """What ``"auto"`` means on one machine: mirrored over several devices, one device, or the default."""
    if devices and len(devices) > 1 or len(gpus) > 1:
        return "mirrored"
    if devices or len(gpus) == 1:
        return "one_device"
    return "default"


def _multi_worker_strategy():
    """MultiWorkerMirroredStrategy over TF_CONFIG's cluster, its collectives bounded in time."""
    import tensorflow as tf

    if _cluster_size(_cluster()) < 2:
        raise ValueError("strategy='multi_worker' needs TF_CONFIG with a cluster of 2 or more tasks. "
                         "Received: strategy='multi_worker'")
    # A collective that waits longer than this fails instead of hanging forever when a
    # worker is gone (a closed socket is usually reported sooner, by gRPC); the wait for the
    # cluster's tasks to start is bounded by the same time.
    # TensorFlow waits for the other tasks inside C++ without releasing the GIL and without a
    # timeout, so no thread of this process can end that wait: the CLI's supervisor
    # (keras_transfer._utils.supervisor) bounds it from outside, told by report() when it starts and ends.
    timeout = collective_timeout()
    logger.info(f"waiting up to {timeout:g} s for the cluster: {', '.join(peers())}")
    supervisor.report(supervisor.WAITING)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout))


def describe_strategy(strategy) -> str:
    """One line: which strategy (the default one named as such, not by its private class), how
    many replicas, on which devices."""
    name = type(strategy).__name__
    if name.startswith("_"):  # tf.distribute's default strategy is a private class
        name = "the default strategy (no tf.distribute)"
    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list
        devices = ["the default device"]
    text = f"distribute: {name} with {strategy.num_replicas_in_sync} replica(s) on {', '.join(devices)}"
    if is_multi_worker(strategy):
        resolver = strategy.cluster_resolver
        text += f" ({resolver.task_type} {resolver.task_id} of {_cluster_size(_cluster())} tasks)"
    return text


def is_multi_worker(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy that really spans several tasks."""
    import tensorflow as tf

    from keras_transfer._utils.keras_internals import in_multi_worker_mode

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and in_multi_worker_mode(strategy)


def input_share(strategy) -> tuple[int, int]:
    """``(workers, index)``: which share of the files this process reads. ``(1, 0)`` unless
    ``strategy`` spans several tasks; then every task that trains (chief and workers, chief first)
    reads its own."""
    if strategy is None or not is_multi_worker(strategy):
        return (1, 0)
    cluster = _cluster().get("cluster", {})
    tasks = [(job, i) for job in ("chief", "worker") for i in range(len(cluster.get(job, [])))]
    resolver = strategy.cluster_resolver
    return (len(tasks), tasks.index((resolver.task_type, int(resolver.task_id))))


def all_gather_rows(strategy, rows: np.ndarray) -> np.ndarray:
    """Every task's ``rows`` (numpy, the same trailing shape and dtype on all, any number of
    rows), concatenated in task order (chief first, as :func:`input_share` numbers them), on every
    task. Each task must call it at the same point: it is a collective."""
    import tensorflow as tf

    rows = np.asarray(rows)
    workers, _ = input_share(strategy)
    per_task = strategy.num_replicas_in_sync // workers
    # the collective takes 32/64-bit numbers only: booleans, bfloat16 and the like travel as those
    carrier = rows.dtype if rows.dtype in (np.float32, np.float64, np.int32, np.int64) else (
        np.int32 if rows.dtype.kind in "biu" else np.float32)
    local = tf.constant(rows.astype(carrier, copy=False))
    empty = local[:0]
    values = strategy.experimental_distribute_values_from_function(
        lambda context: local if context.replica_id_in_sync_group % per_task == 0 else empty)
    return strategy.gather(values, axis=0).numpy().astype(rows.dtype, copy=False)


def is_chief(strategy) -> bool:
    """True where checkpoints and exports are written: single-process runs, or the chief task
    (``chief``, else ``worker`` 0) of a multi-worker cluster."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in _cluster().get("cluster", {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_dir() -> str:
    """A worker's private scratch folder (multi-worker Keras wants every worker to write)."""
    return tempfile.mkdtemp(prefix="keras-transfer-worker-")


def remove_worker_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
