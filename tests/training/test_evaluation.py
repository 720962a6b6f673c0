"""Evaluation: per-class metrics, test-time augmentation."""


import numpy as np
from training_helpers import small_splits, small_vgg

from keras_transfer import training


def test_test_time_augmentation_averages_the_views(rng):
    from keras_transfer.data.augmentation import Views

    model = small_vgg()
    head = model.get_layer("head")  # a fresh head answers 1/3 everywhere: give it weights that tell images apart
    head.set_weights([rng.normal(0, 1e-3, w.shape).astype("float32") for w in head.get_weights()])
    x = rng.integers(0, 255, (5, 32, 32, 3)).astype("uint8")
    tta = training.predict_classes(model, x, views=Views("top_down", 8))
    turned = [np.rot90(x, k, axes=(1, 2)) for k in range(4)]
    every = turned + [t[:, :, ::-1] for t in turned]  # the 8 symmetries of the square, in another order
    manual = np.mean([training.predict_classes(model, np.ascontiguousarray(t)) for t in every], axis=0)
    np.testing.assert_allclose(np.log(tta), np.log(manual), rtol=1e-3, atol=1e-3)
    assert not np.allclose(np.log(tta), np.log(training.predict_classes(model, x)), atol=1e-2)


def test_evaluate_reports_per_class_metrics(rng):
    model = small_vgg()
    s = small_splits(rng)
    metrics = training.evaluate(model, s.val)
    assert set(metrics["per_class"]) == {"c0", "c1", "c2"}
    assert np.sum(metrics["confusion_matrix"]) == len(s.val)
