"""`tflite_parity`: how closely a `.tflite` file reproduces its model."""

import numpy as np

from keras_stn.export.run import run_tflite


def tflite_parity(model, path, inputs):
    """How closely a `.tflite` file reproduces a Keras model on `inputs`.

    Args:
        model: the `keras.Model` the file was converted from.
        path: path of the `.tflite` file.
        inputs: an array (or what `run_tflite` takes) of model inputs.

    Returns:
        A dict: `"examples"`, and per model output (in order) under
        `"outputs"` a dict of `"max_abs"` and `"mean_abs"` differences, plus
        `"top1_agreement"` for `[batch, classes]` outputs.

    Example:

    ```python
    parity = keras_stn.export.tflite_parity(model, "stn.tflite", images)
    assert parity["outputs"][0]["max_abs"] < 1e-4
    ```
    """
    expected = model(inputs)
    expected = [np.asarray(e) for e in (
        expected if isinstance(expected, (list, tuple)) else [expected])]
    actual = run_tflite(path, inputs)
    actual = actual if isinstance(actual, list) else [actual]
    outputs = []
    for want, got in zip(expected, actual):
        difference = np.abs(np.asarray(got, np.float64) - want)
        entry = {"max_abs": float(difference.max()),
                 "mean_abs": float(difference.mean())}
        if want.ndim == 2 and want.shape[-1] > 1:
            entry["top1_agreement"] = float(np.mean(
                np.argmax(got, -1) == np.argmax(want, -1)))
        outputs.append(entry)
    return {"examples": int(len(expected[0])), "outputs": outputs}
