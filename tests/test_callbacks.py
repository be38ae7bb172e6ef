"""TransformerSnapshots: images and θ statistics in TensorBoard per epoch."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stn


def _events(log_dir):
    """{tag: [(step, kind)]} of the TensorBoard event files under log_dir."""
    from tensorflow.core.util import event_pb2

    found = {}
    for path in glob.glob(f"{log_dir}/**/events.out.tfevents.*",
                          recursive=True):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                kind = value.metadata.plugin_data.plugin_name
                found.setdefault(value.tag, []).append((event.step, kind))
    return found


def _model():
    loc_net = keras.Sequential([keras.layers.Flatten(),
                                keras.layers.Dense(8, activation="relu"),
                                keras_stn.localization_head("attention")])
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        keras_stn.SpatialTransformer(loc_net, output_size=(6, 6),
                                     transform="attention"),
        keras.layers.Flatten(), keras.layers.Dense(2)])


def test_writes_images_and_theta_every_epoch(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(32, 12, 12, 1)).astype(np.float32)
    labels = rng.integers(0, 2, 32)
    model = _model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    snapshots = keras_stn.callbacks.TransformerSnapshots(
        images[:5], str(tmp_path), max_images=4)
    model.fit(images, labels, epochs=2, batch_size=8, verbose=0,
              callbacks=[snapshots])
    events = _events(tmp_path)
    assert [step for step, _ in events["inputs_and_outputs"]] == [0, 1]
    assert events["inputs_and_outputs"][0][1] == "images"
    for tag in ("theta/distance_from_identity", "theta/mean_0",
                "theta/std_2"):
        assert [step for step, _ in events[tag]] == [0, 1], tag


def test_bad_arguments():
    with pytest.raises(ValueError, match="inputs"):
        keras_stn.callbacks.TransformerSnapshots(np.zeros((4, 4)), "logs")
    with pytest.raises(TypeError, match="layer"):
        keras_stn.callbacks.TransformerSnapshots(
            np.zeros((1, 4, 4, 1)), "logs", layer=keras.layers.Dense(2))
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no SpatialTransformer"):
        model.fit(np.zeros((2, 4, 4, 1)), np.zeros((2, 2)), verbose=0,
                  callbacks=[keras_stn.callbacks.TransformerSnapshots(
                      np.zeros((1, 4, 4, 1)), "logs")])
