"""Which compiler a traced graph is headed for, decided in one place.

TensorFlow's runtime, XLA and LiteRT reward different formulations of the
same arithmetic: the runtime pays per op and for tiny innermost axes, XLA
fuses elementwise ops but runs small matmuls and recomputed gathers slowly,
LiteRT runs GATHER faster than GATHER_ND where TF's runtime does the
opposite. The public ops (`affine_grid`, `affine_coordinates`,
`grid_sample`, `sample_coordinates`) ask `current_target()` once per call
and pass the answer down; every formulation they pick is numerically
equivalent to the others (`tests/test_formulations.py` pins which one each
target traces).

Which target runs where: Keras' `fit` / `predict` use XLA only when
`jit_compile` resolves to True, which on a CPU-only machine it does not
(`jit_compile="auto"`): they run the runtime formulation. `export_tflite`
traces under `use_target("tflite")`. A SavedModel served by TF Serving runs
the runtime formulation.

The two questions TensorFlow has no public API for (is this graph being
compiled by XLA? could a gradient tape record this?) are answered by
`xla_context()` and `recording_gradients()`, the only private imports of
the package; `XLA_DETECTION` and `TAPE_DETECTION` tell whether they were
found (`tests/test_formulations.py` fails if either stops working).
"""

import contextlib
import sys
import threading

import tensorflow as tf

from keras_stn.core.overrides import overridden

TARGETS = ("runtime", "xla", "tflite")

try:  # Not public API: without it every graph takes the runtime formulation.
    from tensorflow.python.framework import ops as _ops
    from tensorflow.python.ops import control_flow_util as _control_flow_util

    XLA_DETECTION = hasattr(_control_flow_util, "GraphOrParentsInXlaContext")
except ImportError:  # pragma: no cover - depends on the TF build
    XLA_DETECTION = False
try:  # Not public API: without it gradients use the unfused rounding.
    from tensorflow.python.eager import record as _record

    TAPE_DETECTION = hasattr(_record, "could_possibly_record")
except ImportError:  # pragma: no cover - depends on the TF build
    TAPE_DETECTION = False

_state = threading.local()


def xla_context():
    """True while tracing a function that XLA will compile (`jit_compile`)."""
    if not XLA_DETECTION:  # pragma: no cover
        return False
    return bool(_control_flow_util.GraphOrParentsInXlaContext(
        _ops.get_default_graph()))


def recording_gradients():
    """True while a gradient tape could record what is being traced or run.

    Computations whose derivative needs more than their value (the exact
    side of a kink) use it to pay for that only when training.
    """
    if not TAPE_DETECTION:  # pragma: no cover
        return False
    return bool(_record.could_possibly_record())


def current_target():
    """`"runtime"`, `"xla"` or `"tflite"`: where the graph being traced
    will run. An override set with `use_target` wins; otherwise XLA when
    tracing for `jit_compile`, else TF's runtime."""
    override = getattr(_state, "target", None)
    if override is not None:
        return override
    return "xla" if xla_context() else "runtime"


# Exporters that trace for a converter which cannot take a compiled function
# (tf2onnx keeps an XLA cluster as a call it cannot convert): the module and
# function whose frame marks their trace.
_NO_CLUSTER_EXPORTERS = (("keras.src.export.onnx", "export_onnx"),)


@tf.autograph.experimental.do_not_convert
def tracing_for_an_exporter_without_xla():
    """True while a graph is traced for a converter that cannot take XLA
    clusters: Keras' ONNX export (`model.export(path, format="onnx")`,
    through tf2onnx). Read from the call stack, and only inside a graph
    (never eagerly), so it costs nothing where it cannot apply."""
    if not tf.inside_function():
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if (frame.f_globals.get("__name__"),
                frame.f_code.co_name) in _NO_CLUSTER_EXPORTERS:
            return True
        frame = frame.f_back
    return False


def runtime_graph():
    """True where what is traced or run goes to TF's runtime by default:
    no `use_target` override (a pinned formulation is traced as asked)
    and not inside a graph XLA compiles."""
    return getattr(_state, "target", None) is None and not xla_context()


@contextlib.contextmanager
def use_target(target):
    """Traces inside take `target`'s formulations (`export_tflite` uses
    `"tflite"`; tests and benchmarks use all three).

    Args:
        target: one of `TARGETS`.
    """
    if target not in TARGETS:
        raise ValueError(
            f"Invalid value for argument `target`. Expected one of {TARGETS}. "
            f"Received: target={target!r}")
    with overridden(_state, "target", target):
        yield
