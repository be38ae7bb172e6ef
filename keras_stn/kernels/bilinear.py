"""The arithmetic of the padded 2-D bilinear kernel that the backends with a
hand-written gradient share (TensorFlow's and JAX's).

The image is zero-padded by `PAD_BEFORE` pixels before and `PAD_AFTER`
after on each spatial axis, so that with pixel coordinates kept within
`MARGIN` pixels of the image (`coordinates.source` keeps them so) all four
corners of every sample are in range without clamping, and corners outside
the image read zero without masks (PyTorch skips them: the same values and
derivatives). Fractions are snapped (`coordinates.split`); the derivative
with respect to a coordinate is taken straight through the snap, on the
corners of its unsnapped floor, as PyTorch's is.
"""

from keras_stn.core.coordinates import MARGIN
from keras_stn.kernels import coordinates as _coordinates

PAD_BEFORE = MARGIN
PAD_AFTER = MARGIN + 1


def padded_size(size):
    """The length of a padded axis of `size` pixels."""
    return size + PAD_BEFORE + PAD_AFTER


def split(ops, coord, size):
    """Integer corner (int32) and snapped fraction of pixel coordinates on
    an axis of static `size` pixels."""
    corner, fraction = _coordinates.split(
        ops, coord, _coordinates.snap_tolerance(ops, size, ops.dtype(coord)))
    return ops.cast(corner, "int32"), fraction


def top_left_index(ops, x0, y0, batch, height, width):
    """Flat index, in the padded batch `[batch * padded rows * padded
    columns]`, of each sample's top-left corner (`x0`, `y0`: int32 corners
    of the unpadded image, `[batch, ...]`)."""
    padded_width = padded_size(width)
    offsets = (ops.arange(batch) * (padded_size(height) * padded_width)
               + (PAD_BEFORE * padded_width + PAD_BEFORE))
    offsets = ops.reshape(offsets, (-1,) + (1,) * (len(x0.shape) - 1))
    return y0 * padded_width + x0 + offsets


def corner_indices(top_left, width):
    """Flat indices of the 4 corners: top-left, top-right, bottom-left,
    bottom-right."""
    padded_width = padded_size(width)
    return [top_left, top_left + 1, top_left + padded_width,
            top_left + (padded_width + 1)]


def weights(ax, ay):
    """Bilinear weights of the 4 corners, in `corner_indices` order."""
    bx, by = 1.0 - ax, 1.0 - ay
    return [bx * by, ax * by, bx * ay, ax * ay]


def coordinate_gradient(ax, ay, dots):
    """The derivatives with respect to x and y from the fractions and
    `dots`, each corner's value dotted with the upstream gradient over the
    channels (in `corner_indices` order)."""
    d00, d01, d10, d11 = dots
    bx, by = 1.0 - ax, 1.0 - ay
    return (by * (d01 - d00) + ay * (d11 - d10),
            bx * (d10 - d00) + ax * (d11 - d01))
