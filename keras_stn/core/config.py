"""Process-wide settings of keras_stn.

`set_jit_compile(False)` (or `KERAS_STN_JIT_COMPILE=0` in the environment)
turns off the XLA clusters that TensorFlow's runtime path runs the warp in
by default (`keras_stn.backends.tensorflow.clusters`); JAX and PyTorch
ignore it (JAX always compiles, PyTorch runs eagerly).
"""

import contextlib
import os
import threading

from keras_stn.core.overrides import overridden

ENVIRONMENT_VARIABLE = "KERAS_STN_JIT_COMPILE"

_setting = {"jit_compile": True}
_local = threading.local()


def _check(enabled):
    if not isinstance(enabled, bool):
        raise TypeError(
            "Invalid value for argument `enabled`. Expected a bool. "
            f"Received: enabled={enabled!r}")


def set_jit_compile(enabled):
    """Whether TensorFlow's runtime runs the warp as an XLA cluster.

    On by default where TensorFlow has XLA: eager calls, Keras' `fit` /
    `predict` on a CPU, `tf.data` maps and SavedModels then run the public
    ops and `SpatialTransformer`'s warp (and its gradient) compiled, with
    the same values and gradients. Graphs already compiled by XLA, and
    TFLite export, are unaffected. Turning it off restores the plain
    runtime graph, for example to export a SavedModel for a TensorFlow
    build without XLA.

    Args:
        enabled: bool.

    Returns:
        The previous setting.

    Example:

    >>> previous = keras_stn.set_jit_compile(False)
    >>> keras_stn.jit_compile_enabled()
    False
    >>> _ = keras_stn.set_jit_compile(previous)
    """
    _check(enabled)
    previous = _setting["jit_compile"]
    _setting["jit_compile"] = enabled
    return previous


def jit_compile_enabled():
    """The setting in force in this thread: `use_jit_compile` if inside
    one, else `KERAS_STN_JIT_COMPILE` if it is `0`/`false`/`off`/`no`, else
    `set_jit_compile`'s (default True)."""
    override = getattr(_local, "jit_compile", None)
    if override is not None:
        return override
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower()
    if value in ("0", "false", "off", "no"):
        return False
    return _setting["jit_compile"]


@contextlib.contextmanager
def use_jit_compile(enabled):
    """`set_jit_compile(enabled)` for the block, in this thread only.

    What is traced inside keeps the choice: a `tf.function` traced in the
    block runs as it was traced.

    Args:
        enabled: bool.
    """
    _check(enabled)
    with overridden(_local, "jit_compile", enabled):
        yield
