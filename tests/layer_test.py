"""A small layer-test helper, modelled on Keras' `run_layer_test`.

It uses only the public Keras API (no `keras.src`) and checks, for one
`SpatialTransformer` factory and input shape: config round-trip,
serialise / deserialise, `build` alone creating every variable, a symbolic
call with a `None` batch, an eager call, one `fit` step whose gradients reach
the localisation net, `.keras` save / load with equal outputs, and, as
Keras' own `testing/test_case.py` does, that symbolic and eager outputs have
the same dtypes under mixed precision.
"""

import os

import keras
import numpy as np
from tests.conftest import assert_close


def _loc_weights(layer):
    return [w.numpy() for w in layer.localization_net.weights]


def _dtypes(outputs):
    outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    return [keras.backend.standardize_dtype(output.dtype) for output in outputs]


def check_output_dtypes(make_layer, input_shape, policy="mixed_float16"):
    """Symbolic and eager outputs of a layer made under `policy` agree in
    dtype; returns those dtypes (a list, one per output)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        layer = make_layer()
        symbolic = layer(keras.Input(input_shape[1:]))
        eager = layer(np.zeros(input_shape, "float32"))
    finally:
        keras.config.set_dtype_policy(previous)
    assert _dtypes(symbolic) == _dtypes(eager), (
        f"symbolic dtypes {_dtypes(symbolic)} != eager {_dtypes(eager)} "
        f"under {policy}")
    return _dtypes(eager)


def run_layer_test(make_layer, input_shape, expected_output_shape, tmp_path,
                   seed=0):
    """Runs the checks above; returns the eager output for further checks.

    Args:
        make_layer: callable returning a fresh, unbuilt layer.
        input_shape: full input shape, batch first.
        expected_output_shape: full output shape, batch first.
        tmp_path: a folder for the `.keras` file.
    """
    rng = np.random.default_rng(seed)
    inputs = rng.uniform(size=input_shape).astype("float32")

    # Config round-trip and serialisation.
    layer = make_layer()
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is type(layer)
    assert restored.get_config() == config

    # build(input_shape) alone creates every variable.
    built = make_layer()
    built.build(input_shape)
    reference_layer = make_layer()
    reference_layer(inputs)
    assert len(built.weights) == len(reference_layer.weights) > 0
    assert len(built.weights) == len(built.localization_net.weights)

    # Symbolic call with a None batch, and compute_output_shape.
    layer = make_layer()
    symbolic_in = keras.Input(input_shape[1:])
    symbolic_out = layer(symbolic_in)
    assert tuple(symbolic_out.shape) == (None,) + tuple(expected_output_shape[1:])
    assert layer.compute_output_shape((None,) + tuple(input_shape[1:])) == (
        (None,) + tuple(expected_output_shape[1:])
    )

    # Output dtypes under mixed precision: symbolic as eager.
    check_output_dtypes(make_layer, input_shape)

    # Eager call.
    output = np.array(layer(inputs))
    assert output.shape == tuple(expected_output_shape)
    assert np.isfinite(output).all()

    # One fit step: gradients reach the localisation net.
    model = keras.Model(symbolic_in, keras.layers.Dense(1)(
        keras.layers.Flatten()(symbolic_out)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = _loc_weights(layer)
    targets = rng.normal(size=(input_shape[0], 1)).astype("float32")
    model.fit(inputs, targets, epochs=1, batch_size=input_shape[0], verbose=0)
    after = _loc_weights(layer)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after)), (
        "no gradient reached the localisation net"
    )

    # .keras save / load without custom_objects.
    path = os.path.join(str(tmp_path), "layer_test.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_layer = next(
        item for item in loaded.layers if isinstance(item, type(layer))
    )
    assert type(loaded_layer) is type(layer)
    for original, reloaded in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(original.numpy(), reloaded.numpy())
    assert_close(np.array(loaded(inputs)), np.array(model(inputs)), kind="exact")
    return output
