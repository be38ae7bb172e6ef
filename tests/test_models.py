"""The paper's models and the transformer-output helper."""

import keras
import numpy as np
import pytest

import keras_stn
from tests.conftest import assert_close
from keras_stn.paper import models


@pytest.mark.parametrize("size,output_size", [(28, None), (42, (28, 28)),
                                              (60, (30, 30))])
def test_paper_models(size, output_size):
    cnn = models.paper_cnn((size, size, 1))
    st_cnn = models.paper_st_cnn((size, size, 1), output_size=output_size)
    images = np.random.default_rng(0).uniform(size=(2, size, size, 1))
    assert cnn(images.astype("float32")).shape == (2, 10)
    assert st_cnn(images.astype("float32")).shape == (2, 10)
    layer_types = [type(layer).__name__ for layer in cnn.layers]
    assert layer_types == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D",
                           "Flatten", "Dense"]
    assert [layer.kernel_size for layer in cnn.layers
            if isinstance(layer, keras.layers.Conv2D)] == [(9, 9), (7, 7)]
    assert isinstance(st_cnn.layers[0], keras_stn.SpatialTransformer)
    # Comparable sizes: the ST-CNN is within 1.5× of the CNN.
    assert st_cnn.count_params() < 1.5 * cnn.count_params()
    # A fresh ST-CNN's transformer is the identity (up to resampling).
    if output_size is None:
        warped = keras.ops.convert_to_numpy(
            st_cnn.layers[0](images.astype("float32")))
        # Exact on TensorFlow and JAX, which snap a pixel centre's few-ulp
        # offset away; PyTorch's own kernel blends by it (≤ 28 · 6e-8).
        atol = 5e-6 if keras.backend.backend() == "torch" else 1e-6
        np.testing.assert_allclose(warped, images, atol=atol)


def test_with_transformer_output():
    model = models.paper_st_cnn((42, 42, 1), output_size=(28, 28))
    two = models.with_transformer_output(model)
    images = np.random.default_rng(1).uniform(size=(3, 42, 42, 1))
    logits, warped = two(images.astype("float32"))
    assert_close(keras.ops.convert_to_numpy(logits), keras.ops.convert_to_numpy(model(images.astype("float32"))), kind="exact")
    assert tuple(warped.shape) == (3, 28, 28, 1)
    with pytest.raises(ValueError, match="SpatialTransformer"):
        models.with_transformer_output(models.paper_cnn((28, 28, 1)))
