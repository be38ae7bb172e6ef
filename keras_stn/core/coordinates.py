"""Constants and plain arithmetic of the coordinate path, for every backend.

Zeros and border padding read the same for every coordinate `MARGIN` pixels
or more outside the image (a bilinear corner or bicubic tap with a non-zero
weight is then outside, or clipped to the edge), so coordinates are clamped
to `[-MARGIN, size - 1 + MARGIN]`: finite, safe to cast to int, and within
the zero padding of TF's bilinear kernel. Every backend applies that bound
(`tests/test_backends.py` checks they agree).
"""

MARGIN = 2
# Beyond 2**23 a float32 has no fractional part: reflection of such a
# coordinate is meaningless, so it is clamped there first.
REFLECTION_LIMIT = 2.0**23
# A fraction within this many sizes' worth of relative precision of 0 or 1
# is snapped onto it, keyed by the coordinate dtype's name.
SNAP_RELATIVE = {"float32": 2.0**-20, "float64": 2.0**-49}
# PyTorch's (and OpenCV's) cubic convolution coefficient.
CUBIC_A = -0.75
# |w| of a projective transform is kept at least this far from 0.
PROJECTIVE_EPSILON = 1e-6


def snap_tolerance(size, dtype_name):
    """The snap tolerance of an axis of `size` pixels in `dtype_name`
    (`"float32"` or `"float64"`)."""
    return max(size, 1) * SNAP_RELATIVE[dtype_name]


def cubic_weights(t):
    """The 4 cubic-convolution weights of taps -1, 0, 1, 2 at offset `t`.

    Plain arithmetic, so it runs on any backend's tensors.
    """
    a = CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]


def coordinate_dtype(dtype_name):
    """The dtype grids and coordinates are computed in: `"float64"` for
    float64 values, else `"float32"` (float16 and bfloat16 grids lack the
    precision for pixel coordinates)."""
    return "float64" if dtype_name == "float64" else "float32"
