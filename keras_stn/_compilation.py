"""Which compiler a traced graph is headed for.

TensorFlow's runtime and XLA reward different formulations of the same
arithmetic: the runtime pays per op and for tiny innermost axes, XLA fuses
elementwise ops but runs small matmuls and recomputed gathers slowly. The
ops pick between numerically equivalent formulations at trace time.
"""

try:  # Not public API: without it, every graph takes the runtime formulation.
    from tensorflow.python.framework import ops as _ops
    from tensorflow.python.ops import control_flow_util as _control_flow_util
except ImportError:  # pragma: no cover - depends on the TF build
    _control_flow_util = None


def in_xla_context():
    """True while tracing a function that XLA will compile (`jit_compile`)."""
    if _control_flow_util is None:  # pragma: no cover
        return False
    try:
        return bool(_control_flow_util.GraphOrParentsInXlaContext(
            _ops.get_default_graph()))
    except Exception:  # pragma: no cover - a changed private API
        return False
