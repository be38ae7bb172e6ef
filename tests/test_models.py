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


def test_dropout_sits_before_the_logits_of_both_classifiers():
    cnn = models.paper_cnn((28, 28, 1), dropout=0.5)
    st_cnn = models.paper_st_cnn((42, 42, 1), output_size=(28, 28),
                                 dropout=0.5)
    for model in (cnn, st_cnn):
        names = [layer.name for layer in model.layers]
        assert names[-3:] == ["flatten", "dropout", "logits"]
        assert model.get_layer("dropout").rate == 0.5
    # The localisation net has none: the transformer is deterministic.
    loc = st_cnn.layers[0].localization_net
    assert not [layer for layer in loc.layers
                if isinstance(layer, keras.layers.Dropout)]
    # Inference ignores it: the same outputs as without dropout's layer.
    plain = models.paper_cnn((28, 28, 1))
    plain.set_weights(cnn.get_weights())
    images = np.random.default_rng(2).uniform(size=(3, 28, 28, 1)).astype(
        "float32")
    assert_close(keras.ops.convert_to_numpy(cnn(images)),
                 keras.ops.convert_to_numpy(plain(images)), kind="exact")
    # Training drops about half of the features: the outputs change.
    trained = keras.ops.convert_to_numpy(cnn(images, training=True))
    assert not np.allclose(trained, keras.ops.convert_to_numpy(plain(images)))


@pytest.mark.parametrize("dropout", [-0.1, 1.0, "0.5", True, float("nan")])
def test_bad_dropout_is_refused_by_name(dropout):
    with pytest.raises(ValueError, match="`dropout`.*Received: dropout="):
        models.paper_cnn((28, 28, 1), dropout=dropout)


def test_weight_decay_shrinks_the_classifiers_kernels_only():
    from keras_stn.paper import experiment

    model = models.paper_st_cnn((42, 42, 1), output_size=(28, 28))
    experiment.compile_model(model, learning_rate=0.1, total_steps=10,
                             weight_decay=0.5)
    optimizer = model.optimizer
    variables = model.trainable_variables
    optimizer.build(variables)
    before = [keras.ops.convert_to_numpy(v) for v in variables]
    # Zero gradients: Adam moves nothing, so only the decay acts, by
    # learning rate × weight decay = 5 % at the schedule's first step.
    optimizer.apply_gradients(
        [(keras.ops.zeros(v.shape), v) for v in variables])
    transformer = {id(v) for v in model.layers[0].trainable_variables}
    decayed = 0
    for variable, old in zip(variables, before):
        new = keras.ops.convert_to_numpy(variable)
        if id(variable) in transformer or variable.name == "bias":
            np.testing.assert_array_equal(new, old, err_msg=variable.path)
        else:
            np.testing.assert_allclose(new, 0.95 * old, rtol=1e-6,
                                       err_msg=variable.path)
            decayed += 1
    assert decayed == 3  # the two convolutions' and the logits' kernels
    with pytest.raises(ValueError, match="`weight_decay`.*Received: "
                                         "weight_decay=-0.1"):
        experiment.compile_model(models.paper_cnn((28, 28, 1)), 0.1, 10,
                                 weight_decay=-0.1)


def _learning_rate_at(optimizer, step):
    optimizer.iterations.assign(step)
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def test_warmup_raises_the_learning_rate_linearly_then_decays_it():
    from keras_stn.paper import experiment

    model = experiment.compile_model(models.paper_cnn((28, 28, 1)),
                                     learning_rate=1e-3, total_steps=100,
                                     warmup_steps=20)
    rates = np.array([_learning_rate_at(model.optimizer, step)
                      for step in range(101)])
    # Linear from 0 to the peak over the first 20 steps ...
    np.testing.assert_allclose(rates[:21], np.arange(21) * 1e-3 / 20,
                               rtol=1e-6, atol=1e-12)
    # ... then half a cosine from the peak to 0 over the other 80.
    expected = 0.5e-3 * (1 + np.cos(np.pi * np.arange(81) / 80))
    np.testing.assert_allclose(rates[20:], expected, rtol=1e-5, atol=1e-10)
    # Without a warm-up the cosine starts at the peak (the committed runs).
    plain = experiment.compile_model(models.paper_cnn((28, 28, 1)), 1e-3, 100)
    np.testing.assert_allclose(
        [_learning_rate_at(plain.optimizer, step) for step in (0, 50, 100)],
        [1e-3, 0.5e-3, 0.0], rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("steps", [-1, 100, 150, 2.5, True, "10"])
def test_bad_warmup_is_refused_by_name(steps):
    from keras_stn.paper import experiment

    with pytest.raises(ValueError, match=r"`warmup_steps`.*\[0, 100\).*"
                                         r"Received: warmup_steps="):
        experiment.compile_model(models.paper_cnn((28, 28, 1)), 1e-3, 100,
                                 warmup_steps=steps)


def test_st_cnn_can_start_zoomed_on_the_canvas_centre():
    # TC's recipe: 60-pixel canvas, 30-pixel output, initial scale 0.5:
    # output pixel j samples input pixel j + 15 exactly (align_corners=False).
    model = models.paper_st_cnn((60, 60, 1), output_size=(30, 30),
                                initial_scale=0.5)
    images = np.random.default_rng(3).uniform(size=(2, 60, 60, 1)).astype(
        "float32")
    warped = keras.ops.convert_to_numpy(model.layers[0](images))
    atol = 5e-6 if keras.backend.backend() == "torch" else 1e-6
    np.testing.assert_allclose(warped, images[:, 15:45, 15:45], atol=atol)
    head = model.layers[0].localization_net.layers[-1]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head.bias),
                                  [0.5, 0, 0, 0, 0.5, 0])


@pytest.mark.parametrize("scale", [0, -1.0, float("inf"), "0.5", True])
def test_bad_initial_scale_is_refused_by_name(scale):
    with pytest.raises(ValueError,
                       match="`initial_scale`.*Received: initial_scale="):
        models.paper_st_cnn((28, 28, 1), initial_scale=scale)
