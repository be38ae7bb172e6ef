"""Which compiler a traced graph is headed for.

TensorFlow's runtime, XLA and LiteRT reward different formulations of the
same arithmetic: the runtime pays per op and for tiny innermost axes, XLA
fuses elementwise ops but runs small matmuls and recomputed gathers slowly,
LiteRT runs GATHER faster than GATHER_ND where TF's runtime does the
opposite. The ops pick between numerically equivalent formulations at trace
time.
"""

import contextlib
import threading

try:  # Not public API: without it, every graph takes the runtime formulation.
    from tensorflow.python.eager import record as _record
    from tensorflow.python.framework import ops as _ops
    from tensorflow.python.ops import control_flow_util as _control_flow_util
except ImportError:  # pragma: no cover - depends on the TF build
    _control_flow_util = _record = None


def in_xla_context():
    """True while tracing a function that XLA will compile (`jit_compile`)."""
    if _control_flow_util is None:  # pragma: no cover
        return False
    try:
        return bool(_control_flow_util.GraphOrParentsInXlaContext(
            _ops.get_default_graph()))
    except Exception:  # pragma: no cover - a changed private API
        return False


def recording_gradients():
    """True while a gradient tape could record what is being traced or run.

    Computations whose derivative needs more than their value (the exact
    side of a kink) use it to pay for that only when training.
    """
    if _record is None:  # pragma: no cover
        return False
    try:
        return bool(_record.could_possibly_record())
    except Exception:  # pragma: no cover - a changed private API
        return False


_state = threading.local()


@contextlib.contextmanager
def tflite_export():
    """Graphs traced inside are headed for the TFLite converter."""
    previous = getattr(_state, "tflite", False)
    _state.tflite = True
    try:
        yield
    finally:
        _state.tflite = previous


def exporting_tflite():
    """True while `export_tflite` traces a model for conversion."""
    return getattr(_state, "tflite", False)
