"""Compute precision: float32, bfloat16 on CPUs with bf16 instructions, float16 on GPUs.

Measured on a 2-core AMD EPYC with avx512_bf16 (TensorFlow 2.21): VGG16 at 96 px trains 2.2x
faster with ``mixed_bfloat16`` than in float32 (20.4 vs 9.4 img/s) and infers 2.2x faster;
float16 on a CPU is slower than float32, so it is refused there. Variables stay float32, and
every head computes its outputs in float32 (a stable softmax), so exports serve float32.
"""

from __future__ import annotations

import contextlib
import logging

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# Whether "auto" picks bfloat16 on a CPU that has it: benchmarks/bench_quality.py --precision
# bfloat16 must show no accuracy loss over 1 point against float32 for this to be True. Measured
# (default recipe, bfloat16 vs float32): guitars 1.000/1.000, ELPV 0.825/0.825, digits
# 0.980/0.980 (seed 0); Fashion-MNIST over 6 paired seeds 0.816 vs 0.821, a difference of
# -0.5 +- 0.6 points (benchmarks/results/quality_fashion_bf16_seeds.json; a single seed had
# shown -2 points, inside the +-1.5-point run-to-run noise of one seed).
AUTO_BF16_ON_CPU = True


def cpu_flags() -> frozenset:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _bf16_pays_on_cpu(backbone: str | None) -> bool:
    if backbone is None:
        return True
    from keras_transfer.models.backbones import get_backbone

    return get_backbone(backbone).cpu_bfloat16


def choose(precision: str = "auto", gpu: bool | None = None, flags=None, backbone: str | None = None) -> str:
    """``float32``, ``bfloat16`` or ``float16`` for this machine (``gpu``/``flags``: seams for tests).

    ``auto``: float16 on a GPU; on a CPU, bfloat16 where it has bf16 instructions and
    ``AUTO_BF16_ON_CPU`` (set by the quality benchmark; True since 2026-11-23) and bfloat16
    trains ``backbone`` faster there (its table row's ``cpu_bfloat16``), else float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}")
    gpu = has_gpu() if gpu is None else gpu
    flags = cpu_flags() if flags is None else frozenset(flags)
    bf16_cpu = bool(flags & BF16_CPU_FLAGS)
    if precision == "auto":
        if gpu:
            return "float16"
        return "bfloat16" if (bf16_cpu and AUTO_BF16_ON_CPU and _bf16_pays_on_cpu(backbone)) else "float32"
    if precision == "float16" and not gpu:
        raise ValueError("float16 is for GPUs: on a CPU it is slower than float32. Use precision='bfloat16' "
                         "(CPUs with avx512_bf16 or AMX) or 'float32'. Received: precision='float16'")
    if precision == "bfloat16" and not gpu and not bf16_cpu:
        logger.warning("precision bfloat16: this CPU has no bf16 instructions (%s), so it is emulated "
                       "and slower than float32", "/".join(sorted(BF16_CPU_FLAGS)))
    return precision


def apply(precision: str = "auto", gpu: bool | None = None, flags=None, backbone: str | None = None,
          log: bool = True) -> str:
    """Set Keras's global dtype policy for ``precision`` (see :func:`choose`); returns the choice
    (``log``: say it; a library step that computes in float32 for itself keeps quiet).

    Call it before building models: a model computes in the policy it was built under.
    """
    import keras

    chosen = choose(precision, gpu, flags, backbone)
    keras.mixed_precision.set_global_policy(POLICIES[chosen])
    why = "; softmax and exports stay float32" if chosen != "float32" else ""
    if chosen == "float32" and precision == "auto" and choose("auto", gpu, flags) == "bfloat16":
        why = f"; bfloat16 trains {backbone} slower on this CPU"
    if log:
        logger.info("precision: %s (Keras policy %s%s)", chosen, POLICIES[chosen], why)
    return chosen


@contextlib.contextmanager
def using(precision: str = "auto", gpu: bool | None = None, flags=None, backbone: str | None = None,
          log: bool = True):
    """:func:`apply` for the duration of a ``with`` block, then the previous policy again."""
    import keras

    previous = keras.mixed_precision.global_policy().name
    try:
        yield apply(precision, gpu, flags, backbone, log)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _float32_config(obj):
    """A serialized Keras object with every mixed dtype policy replaced by float32."""
    if isinstance(obj, dict):
        config = obj.get("config")
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(config, dict) \
                and str(config.get("name", "")).startswith("mixed_"):
            obj = {**obj, "config": {**config, "name": "float32"}}
        return {k: _float32_config(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    return obj


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(getattr(layer, "layers", None), list):  # a nested model (backbone, head)
            yield from _all_layers(layer)


def as_float32(model):
    """``model`` if it computes in float32 throughout, else a float32 twin with its weights
    (variables are float32 under every mixed policy, so they copy exactly)."""
    import keras

    if all(layer.dtype_policy.compute_dtype == "float32" for layer in _all_layers(model)):
        return model
    twin = keras.saving.deserialize_keras_object(_float32_config(keras.saving.serialize_keras_object(model)))
    twin.set_weights(model.get_weights())
    return twin
