"""A process of `test_one_keras_file_moves_between_backends_and_into_tflite`.

    KERAS_BACKEND=<backend> python tests/backend_roundtrip.py <folder>

Trains a small ST-CNN briefly on this backend and writes
`<folder>/<backend>.keras` (renamed into place once complete); waits for the
other backends' processes to write theirs; loads every file and predicts on
fixed inputs here; under TensorFlow also exports each to TFLite and runs it
in LiteRT. Prints one JSON line: this backend's losses and predictions, and
the predictions of every loaded file.
"""

import json
import os
import sys
import time

import keras
import numpy as np

import keras_stn

BACKENDS = ("jax", "torch", "tensorflow")


def probe_inputs():
    return np.random.default_rng(0).uniform(size=(8, 16, 16, 1)).astype(
        np.float32)


def train(folder):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(64, 16, 16, 1)).astype(np.float32)
    labels = (images[:, :8].mean(axis=(1, 2, 3))
              > images[:, 8:].mean(axis=(1, 2, 3))).astype(np.int64)
    loc = keras.Sequential([
        keras.layers.Conv2D(4, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu"),
        keras_stn.localization_head("affine"),
    ])
    model = keras.Sequential([
        keras.Input((16, 16, 1)),
        keras_stn.SpatialTransformer(loc, output_size=(12, 12)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ])
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(images, labels, epochs=5, batch_size=16, verbose=0)
    path = os.path.join(folder, f"{keras.backend.backend()}.keras")
    model.save(path + ".partial.keras")
    os.replace(path + ".partial.keras", path)
    return {"first_loss": history.history["loss"][0],
            "final_loss": history.history["loss"][-1],
            "predictions": model.predict(probe_inputs(), verbose=0).tolist()}


def wait_for_files(folder, timeout=300):
    paths = [os.path.join(folder, f"{source}.keras") for source in BACKENDS]
    deadline = time.monotonic() + timeout
    while not all(os.path.isfile(path) for path in paths):
        if time.monotonic() > deadline:
            missing = [path for path in paths if not os.path.isfile(path)]
            raise TimeoutError(f"no file from the other backends: {missing}")
        time.sleep(0.2)


def load(folder):
    result = {"predictions": {}, "tflite": {}}
    for source in BACKENDS:
        path = os.path.join(folder, f"{source}.keras")
        model = keras.saving.load_model(path)
        result["predictions"][source] = model.predict(
            probe_inputs(), verbose=0).tolist()
        if keras.backend.backend() == "tensorflow":
            tflite = os.path.join(folder, f"{source}.tflite")
            keras_stn.export_tflite(model, tflite)
            result["tflite"][source] = {
                "predictions": keras_stn.run_tflite(
                    tflite, probe_inputs()).tolist(),
                "ops": keras_stn.tflite_ops(tflite),
            }
    return result


if __name__ == "__main__":
    folder = sys.argv[1]
    trained = train(folder)
    wait_for_files(folder)
    print(json.dumps({"trained": trained, "loaded": load(folder)}))
