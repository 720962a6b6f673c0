"""Batched inference lets models go."""


import numpy as np
from training_helpers import small_vgg

from keras_transfer import training
from keras_transfer.training import batched_inference


def test_compiled_inference_does_not_keep_models_alive():
    import gc

    model = small_vgg()
    training.batched_call(model, np.zeros((3, 32, 32, 3), "uint8"))
    assert len(batched_inference._compiled_calls) >= 1
    del model
    gc.collect()
    assert len(batched_inference._compiled_calls) == 0  # tuner trials build many models: each must be freed
