"""Ensembles: several trained classifiers answering as one, their class probabilities averaged.

An ensemble is a plain functional ``keras.Model``: the raw images go to every member (each
member preprocesses them as it trained), and a ``keras.layers.Average`` named ``ensemble_mean``
takes the mean of their probabilities. So it is exported, served, converted to TensorFlow Lite
and explained like any classifier of this package (Grad-CAM of an ensemble is the mean of its
members' maps for the class the ensemble predicts).

Members must take the same input size (each answers on the image resized as it trained: one
resize for all) and have the same classes in the same order; each member's own head gives
probabilities, so the mean is a probability.
"""

from __future__ import annotations

import keras

MEAN_LAYER = "ensemble_mean"


def ensemble(models, name: str = "ensemble") -> keras.Model:
    """One classifier whose class probabilities are the mean of ``models``' (Keras classifiers or
    :class:`~keras_transfer.Learner` objects, two or more).

    ```python
    >>> splits = kt.load_data(dataset="digits", image_size=32, limit_per_class=5, progress=False)
    >>> learners = [kt.Learner(splits, "vgg16", weights="hed", removed=r, head_epochs=1, fine_tune_epochs=0,
    ...                        verbose=0) for r in (3, 4)]
    >>> for learner in learners:
    ...     _ = learner.fine_tune()
    >>> both = kt.ensemble(learners)
    >>> mean = (learners[0].predict(splits.test.images) + learners[1].predict(splits.test.images)) / 2
    >>> bool(abs(both.predict(splits.test.images, verbose=0) - mean).max() < 1e-5)
    True

    ```
    """
    models = [m.served() if hasattr(m, "served") else m for m in models]  # a Learner: its model as served (float32)
    if len(models) < 2:
        raise ValueError(f"an ensemble needs two or more models. Received: {len(models)} model(s)")
    for i, model in enumerate(models):
        if isinstance(model.output, dict) or len(model.outputs) != 1:
            raise ValueError(f"model {i} ({model.name}) has several outputs (a binary_auxiliary head?): an ensemble "
                             "averages one output of class probabilities per member. Received: outputs "
                             f"{[tuple(o.shape) for o in model.outputs]}")
    shapes = {tuple(m.input_shape[1:]) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"the models take different inputs {sorted(shapes)}: each member answers on the image "
                         "resized as it trained, so all must take the same input size (train them with the same "
                         "--input-size)")
    classes = {int(m.output.shape[-1]) for m in models}
    if len(classes) != 1:
        raise ValueError(f"the models have different numbers of classes {sorted(classes)}: give models trained on "
                         "the same classes")
    images = keras.Input(shapes.pop(), name="images")
    # each member wrapped under its own name (two runs' models often share theirs); no weight is copied
    outputs = [keras.Model(m.inputs, m.outputs[0], name=f"member_{i}")(images) for i, m in enumerate(models)]
    return keras.Model(images, keras.layers.Average(name=MEAN_LAYER, dtype="float32")(outputs), name=name)


def members(model: keras.Model) -> list[keras.Model]:
    """The member classifiers of an :func:`ensemble` (in order), or ``[]`` for any other model."""
    if MEAN_LAYER not in {layer.name for layer in model.layers}:
        return []
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]
