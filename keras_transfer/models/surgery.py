"""Pure functions on Keras models: where a network can be cut, cutting it, freezing it.

Words (see docs/design.md): a *layer index* is the index in the backbone's own ``layers``; a *cut
point* is a layer that every path from the input to the top passes through; *units* are the
cut points a backbone's table row counts when one "removes" layers.
"""

from __future__ import annotations

import dataclasses
from typing import Union

import keras
import numpy as np

from keras_transfer._utils.keras_internals import inbound_node, keras_history
from keras_transfer.models.backbones import backbone_for

LayerRef = Union[int, str]


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone inside ``model``: the model itself, or the one nested in a full classifier."""
    try:
        backbone_for(model)
        return model
    except ValueError:
        pass
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            try:
                backbone_for(layer)
                return layer
            except ValueError:
                continue
    raise ValueError(
        f"Model {model.name!r} neither is nor contains a known backbone "
        "(build it with keras_transfer.build_base)."
    )


def _layer_graph(model: keras.Model):
    """(topologically ordered layers, predecessors of each) of ``model``'s own graph."""
    stop = {id(t) for t in model.inputs}
    preds: dict[int, list] = {}
    order: list = []
    by_id: dict[int, object] = {}

    def visit(tensor):
        op, node_index, _ = keras_history(tensor)
        if op is None or id(op) in by_id:
            return
        by_id[id(op)] = op
        node = inbound_node(op, node_index)
        parents = [] if node.is_input or id(tensor) in stop else node.input_tensors
        preds[id(op)] = []
        for parent in parents:
            visit(parent)
            parent_op = keras_history(parent)[0]
            if parent_op is not None and parent_op not in preds[id(op)]:
                preds[id(op)].append(parent_op)
        order.append(op)  # post-order: every predecessor is already in

    for out in model.outputs:
        visit(out)
    return order, preds


def cut_points(model: keras.Model) -> list[str]:
    """Names of the layers that dominate the output, in layer-index order.

    Derived from the functional graph, not from names: ``dom(v) = {v} ∪ ⋂ dom(parents)``
    over a topological order, and the cut points are ``dom(top)``. For VGG16 that is every
    layer; for InceptionV3 the stem and ``mixed0``…``mixed10`` (not ``mixed9_0``/``mixed9_1``).

    ```python
    >>> kt.cut_points(kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3)))[1:4]   # every VGG layer
    ['block1_conv1', 'block1_conv2', 'block1_pool']

    ```
    """
    order, preds = _layer_graph(model)
    dom: dict[int, frozenset] = {}
    for op in order:
        parent_doms = [dom[id(p)] for p in preds[id(op)]]
        common = frozenset.intersection(*parent_doms) if parent_doms else frozenset()
        dom[id(op)] = common | {id(op)}
    tops = [keras_history(t)[0] for t in model.outputs]
    dominators = frozenset.intersection(*(dom[id(t)] for t in tops))
    return [layer.name for layer in model.layers if id(layer) in dominators]


def layer_index(model: keras.Model, ref: LayerRef) -> int:
    """Index of ``ref`` (a name or an index) in ``model.layers``; clear errors otherwise."""
    n = len(model.layers)
    if isinstance(ref, bool) or not isinstance(ref, (int, str)):
        raise TypeError(f"A layer is named by its name or index, got {ref!r}.")
    if isinstance(ref, int):
        if not -n <= ref < n:
            raise IndexError(f"Layer index {ref} is out of range: {model.name} has {n} layers (0..{n - 1}).")
        return ref % n
    for i, layer in enumerate(model.layers):
        if layer.name == ref:
            return i
    raise ValueError(f"{model.name} has no layer named {ref!r}.")


def units(model: keras.Model) -> list[str]:
    """The backbone's units still present in ``model``, bottom to top.

    ```python
    >>> kt.units(kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3)))[-3:]
    ['block5_conv1', 'block5_conv2', 'block5_conv3']

    ```
    """
    return backbone_for(model).unit_names(model)


def chop(model: keras.Model, removed: int | None = None, at: LayerRef | None = None) -> keras.Model:
    """Remove the top of a backbone; the result shares the original's layers and weights.

    Args:
        model: a backbone from :func:`keras_transfer.build_base`.
        removed: drop the top ``removed`` units and everything after them; the result ends at
            the cut point just before the lowest removed unit (VGG16 ``removed=3`` ends at
            ``block4_pool``; InceptionV3 ``removed=1`` at ``mixed9``). ``0`` keeps everything.
        at: or end exactly at this layer (name or index), which must be a cut point.

    Returns:
        ``keras.Model(model.inputs, <cut layer>.output)`` with the backbone's name, so it is
        still recognised by the backbone table.

    ```python
    >>> base = kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3))
    >>> kt.chop(base, removed=2).layers[-1].name    # the top two units (block5_conv3, block5_conv2) gone
    'block5_conv1'

    ```
    """
    if (removed is None) == (at is None):
        raise ValueError("chop needs exactly one of removed= or at=.")
    if removed is not None:
        index = cut_index(model, removed)
        if removed == 0:
            return model
    else:
        index = _cut_point_index(model, at, cut_points(model))
    return keras.Model(model.inputs, model.layers[index].output, name=model.name)


def cut_index(model: keras.Model, removed: int) -> int:
    """THE resolver for "removed": the layer index a backbone with its top ``removed`` units
    dropped ends at (``removed=0``: its last layer). Everything that counts removed units calls it."""
    names = units(model)
    if isinstance(removed, bool) or not isinstance(removed, (int, np.integer)) or not 0 <= removed <= len(names):
        raise ValueError(
            f"removed={removed} is out of range: {model.name} has {len(names)} units "
            f"({names[0]} … {names[-1]}), so removed must be 0..{len(names)}. Received: removed={removed!r}"
        )
    if removed == 0:
        return len(model.layers) - 1
    index = _end_before_unit(model, names, int(removed), cut_points(model))
    if index == 0:
        raise ValueError(
            f"removed={removed} removes every unit of {model.name}; nothing would be left. "
            f"Use removed<={len(names) - 1}. Received: removed={removed!r}"
        )
    return index


def max_removed(model: keras.Model) -> int:
    """The most units one can remove and keep a network (one unit, at least, stays)."""
    return len(units(model)) - 1


def _cut_point_index(model: keras.Model, at: LayerRef, points: list[str]) -> int:
    index = layer_index(model, at)
    name = model.layers[index].name
    if name not in points:
        raise ValueError(
            f"{name!r} (layer {index}) is not a cut point of {model.name}: some path to the "
            f"top bypasses it. Nearest cut points: {', '.join(_nearest(model, points, index))}."
        )
    return index


def _end_before_unit(model: keras.Model, names: list[str], removed: int, points: list[str]) -> int:
    """Index of the layer a model with the top ``removed`` units dropped ends at.

    A unit's block is the layers after the previous unit up to the unit (for the lowest
    unit: after the last cut point where the graph branches, else the input). Removing a
    unit removes its block, except weightless cut points at its start (VGG's pools), so the
    model ends at the last cut point before the block's first layer with weights.
    """
    point_ix = sorted(layer_index(model, p) for p in points)
    unit_ix = layer_index(model, names[-removed])
    if removed < len(names):
        start = layer_index(model, names[-removed - 1])
    else:
        branch_starts = [i for i in point_ix if i < unit_ix and i + 1 not in point_ix]
        start = branch_starts[-1] if branch_starts else 0
    weighted = [i for i in range(start + 1, unit_ix + 1) if model.layers[i].weights]
    first = weighted[0] if weighted else unit_ix
    return [i for i in point_ix if i < first][-1]


def _nearest(model: keras.Model, points: list[str], index: int) -> list[str]:
    indexed = [(layer_index(model, p), p) for p in points]
    below = [f"{p} (layer {i})" for i, p in indexed if i < index][-1:]
    above = [f"{p} (layer {i})" for i, p in indexed if i > index][:1]
    return below + above


def freeze(model: keras.Model, k) -> keras.Model:
    """Freeze the backbone's layers ``[:k]`` and make the rest trainable; returns ``model``.

    ``k``: anything :func:`resolve_frozen` takes, e.g. a count in the backbone's own layer indices
    (the tutorial's ``model.layers[:249]``), whether ``model`` is the backbone or a classifier
    wrapping it, or a layer name (freeze through it). Head layers are left as they are. Frozen
    BatchNormalization runs in inference mode (Keras 3 does so for ``trainable=False``).
    Recompile after calling this.

    ```python
    >>> model = kt.gap_dense(kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3)), num_classes=3)
    >>> model = kt.freeze(model, "block3_pool")        # layers [:11], through block3_pool
    >>> [layer.trainable for layer in kt.models.backbone_of(model).layers][10:12]
    [False, True]

    ```
    """
    base = backbone_of(model)
    k = resolve_frozen(base, k)
    base.trainable = True  # Keras 3 sets every sublayer; then refreeze the prefix
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= k
    return model


def frozen_count(model: keras.Model) -> int:
    """How many leading backbone layers are frozen (the ``k`` of :func:`freeze`)."""
    base = backbone_of(model)
    if not base.trainable:
        return len(base.layers)
    k = 0
    for layer in base.layers:
        if layer.trainable:
            break
        k += 1
    return k


@dataclasses.dataclass(frozen=True)
class ThroughUnit:
    """"Freeze through the j-th unit" (``"unit:J"`` on the command line): 0 freezes nothing, a
    ``j`` past the last unit left freezes everything. What the tuner's ``frozen_units`` means."""

    j: int


def resolve_frozen(model: keras.Model, frozen, removed: int = 0) -> int:
    """THE resolver for "frozen": any spec as a layer count ``k`` of ``model``'s backbone with its
    top ``removed`` units dropped (so a search can ask without building the chopped model).

    ``frozen``: None (all but the top two units: for InceptionV3 ``layers[:249]``, through
    ``mixed8``, the count Keras's fine-tuning guide uses), ``"all"``, a layer count (an int or a
    digit string), a layer name (freeze through it), or a unit ordinal (:class:`ThroughUnit`,
    ``"unit:J"``). Everything that turns "frozen" into a number calls this.
    """
    base = backbone_of(model)
    n_layers = cut_index(base, removed) + 1
    names = units(base)
    left = names[: len(names) - removed]
    if isinstance(frozen, str) and frozen.startswith("unit:") and frozen[5:].isdigit():
        frozen = ThroughUnit(int(frozen[5:]))
    if frozen is None:
        return layer_index(base, left[-3]) + 1 if len(left) >= 3 else 0
    if isinstance(frozen, ThroughUnit):
        if frozen.j < 0 or frozen.j > len(left) + 1:
            raise ValueError(f"frozen=unit:{frozen.j} is out of range: {base.name} has {len(left)} units left, so "
                             f"use unit:0..unit:{len(left)} (unit:{len(left) + 1} = all). Received: frozen={frozen!r}")
        if frozen.j == 0:
            return 0
        return n_layers if frozen.j > len(left) else layer_index(base, left[frozen.j - 1]) + 1
    if isinstance(frozen, str):
        if frozen == "all":
            return n_layers
        if not frozen.lstrip("-").isdigit():
            try:
                return layer_index(base, frozen) + 1
            except ValueError:
                raise ValueError(f"frozen={frozen!r}: {base.name} has no layer of that name; give a layer count "
                                 f"(0..{n_layers}), 'all', 'unit:J', or one of its layers, e.g. its units "
                                 f"{', '.join(left[-3:])} (`keras-transfer inspect` lists them). "
                                 f"Received: frozen={frozen!r}") from None
        frozen = int(frozen)
    if isinstance(frozen, bool) or not isinstance(frozen, (int, np.integer)) or not 0 <= frozen <= n_layers:
        raise ValueError(f"frozen={frozen} is out of range: {base.name} has {n_layers} layers "
                         f"(use 0..{n_layers}, 'all', 'unit:J' or a layer name). Received: frozen={frozen!r}")
    return int(frozen)


def freeze_points(model: keras.Model, removed: int = 0) -> list[int]:
    """The ``k`` values at unit boundaries: none frozen, through each unit, all frozen.

    ```python
    >>> kt.freeze_points(kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3)))[:4]
    [0, 2, 3, 5]

    ```
    """
    n = len(units(backbone_of(model))) - removed
    return sorted({resolve_frozen(model, ThroughUnit(j), removed) for j in range(n + 2)})


def multiply_adds(layers) -> int:
    """Multiply-adds per image of one call of each of ``layers``, from their kernels.

    A kernel's size times its output's spatial positions: exact for Conv2D, DepthwiseConv2D,
    SeparableConv2D and Dense; layers without a kernel (pooling, BatchNorm, Add) count 0.
    Nested models count their own layers.
    """
    total = 0
    for layer in layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer.layers)
            continue
        kernels = [w for w in layer.weights if "kernel" in w.path.rsplit("/", 1)[-1]]
        if kernels:
            positions = int(np.prod(layer.output.shape[1:-1]))  # 1 for Dense on (batch, features)
            total += positions * sum(int(np.prod(w.shape)) for w in kernels)
    return total


@dataclasses.dataclass(frozen=True)
class LayerRow:
    index: int
    name: str
    type: str
    output_shape: tuple
    params: int
    cut_point: bool
    unit: bool
    trainable: bool


def describe(model: keras.Model) -> list[LayerRow]:
    """One row per backbone layer: index, name, type, output shape, params, cut point?, unit?, trainable.

    ```python
    >>> row = kt.describe(kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3)))[-1]
    >>> row.index, row.name, row.cut_point
    (18, 'block5_pool', True)

    ```
    """
    base = backbone_of(model)
    points = set(cut_points(base))
    unit_names = set(units(base))
    return [
        LayerRow(
            index=i,
            name=layer.name,
            type=type(layer).__name__,
            output_shape=tuple(layer.output.shape),
            params=int(layer.count_params()) if layer.built else 0,
            cut_point=layer.name in points,
            unit=layer.name in unit_names,
            trainable=bool(layer.trainable and base.trainable),
        )
        for i, layer in enumerate(base.layers)
    ]


def format_table(rows: list[LayerRow], only_cut_points: bool = False) -> str:
    """``describe`` rows as a fixed-width table; ``*`` marks cut points, ``U`` units.

    ```python
    >>> rows = kt.describe(kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3)))
    >>> print(kt.format_table(rows).splitlines()[3])
        1  block1_conv1                 Conv2D                   (None, 32, 32, 64)           1792   *   U   yes

    ```
    """
    header = f"{'index':>5}  {'name':<28} {'type':<24} {'output shape':<22} {'params':>10}  cut unit trainable"
    lines = [header, "-" * len(header)]
    for r in rows:
        if only_cut_points and not r.cut_point:
            continue
        shape = "(" + ", ".join("None" if d is None else str(d) for d in r.output_shape) + ")"
        lines.append(
            f"{r.index:>5}  {r.name:<28} {r.type:<24} {shape:<22} {r.params:>10}  "
            f"{'*' if r.cut_point else ' ':^3} {'U' if r.unit else ' ':^4} {'yes' if r.trainable else 'no'}"
        )
    return "\n".join(lines)
