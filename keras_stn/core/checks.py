"""Argument checks of the public ops, on any backend's tensors.

Shapes are read as tuples and dtypes by name, so the checks run on
TensorFlow, JAX and PyTorch tensors and on `keras.KerasTensor`s alike,
without importing a backend.
"""

import keras
import numpy as np

SUPPORTED_INTERPOLATION = ("bilinear", "nearest", "bicubic")
SUPPORTED_PADDING_MODES = ("zeros", "border", "reflection")


def shape_of(value):
    """`value.shape` as a tuple of ints or `None`s, or `None` for an
    unknown rank (TensorFlow graphs)."""
    shape = value.shape
    if getattr(shape, "rank", 0) is None:
        return None
    return tuple(None if dim is None else int(dim) for dim in shape)


def dtype_of(value):
    """The standard name of `value`'s dtype (`"float32"`, …)."""
    return keras.backend.standardize_dtype(value.dtype)


def _text(shape):
    return "<unknown>" if shape is None else str(shape)


def check_size(size, ranks=(2,), argument="size"):
    """Returns `size` as a tuple of positive Python ints, or raises.

    Args:
        size: the value to check.
        ranks: allowed lengths (2: `(height, width)`, 3: `(depth, height,
            width)`).
        argument: the argument's name, for the error message.
    """
    expected = " or ".join(
        "(height, width)" if rank == 2 else "(depth, height, width)"
        for rank in ranks
    )
    message = (
        f"Invalid value for argument `{argument}`. Expected a tuple "
        f"{expected} of positive ints. Received: {argument}={size!r}"
    )
    if not isinstance(size, (tuple, list)) or len(size) not in ranks:
        raise ValueError(message)
    checked = []
    for dim in size:
        if isinstance(dim, (bool, np.bool_)) or not isinstance(
            dim, (int, np.integer)
        ):
            raise TypeError(message)
        if dim < 1:
            raise ValueError(message)
        checked.append(int(dim))
    return tuple(checked)


def check_interpolation(interpolation):
    """Raises a `ValueError` unless `interpolation` is supported."""
    if interpolation not in SUPPORTED_INTERPOLATION:
        raise ValueError(
            "Invalid value for argument `interpolation`. Expected one of "
            f"{SUPPORTED_INTERPOLATION}. Received: "
            f"interpolation={interpolation!r}"
        )


def check_padding_mode(padding_mode):
    """Raises a `ValueError` unless `padding_mode` is supported."""
    if padding_mode not in SUPPORTED_PADDING_MODES:
        raise ValueError(
            "Invalid value for argument `padding_mode`. Expected one of "
            f"{SUPPORTED_PADDING_MODES}. Received: "
            f"padding_mode={padding_mode!r}"
        )


def check_align_corners(align_corners):
    """Raises a `TypeError` unless `align_corners` is a bool."""
    if not isinstance(align_corners, bool):
        raise TypeError(
            "Invalid value for argument `align_corners`. Expected a bool. "
            f"Received: align_corners={align_corners!r}"
        )


def check_theta(theta, size):
    """Raises unless `theta` (any backend's tensor) fits a `size` grid."""
    rank = len(size)
    dtype = dtype_of(theta)
    if not dtype.startswith(("float", "bfloat")):
        raise TypeError(
            "Invalid dtype for argument `theta`. Expected a floating "
            f"dtype. Received: theta.dtype={dtype}"
        )
    shape = shape_of(theta)
    rows, cols = rank, rank + 1
    if shape is None or not (
        (len(shape) == 3 and list(shape[1:]) in ([rows, cols], [None, None]))
        or (len(shape) == 2 and shape[1] in (rows * cols, None))
    ):
        raise ValueError(
            f"Invalid shape for argument `theta`. Expected [batch, {rows}, "
            f"{cols}] or [batch, {rows * cols}] for a {rank}-D size "
            f"{size}. Received: theta.shape={_text(shape)}"
        )


def check_spatial_rank(shape, interpolation):
    """Raises for bicubic sampling of a volume (PyTorch has none either)."""
    if interpolation == "bicubic" and shape is not None and len(shape) == 5:
        raise ValueError(
            "Invalid value for argument `interpolation`: 'bicubic' "
            "samples 2-D images only (as in PyTorch). Use 'bilinear' "
            "(trilinear on volumes) or 'nearest'. Received: "
            f"images.shape={_text(shape)}"
        )


def check_antialias(antialias, interpolation=None, shape=None):
    """Raises unless `antialias` is a bool and, when True, applies: bilinear
    sampling of 2-D images whose height and width are known."""
    if not isinstance(antialias, (bool, np.bool_)):
        raise TypeError(
            "Invalid value for argument `antialias`. Expected a bool. "
            f"Received: antialias={antialias!r}")
    if not antialias:
        return
    if interpolation is not None and interpolation != "bilinear":
        raise ValueError(
            "Invalid value for argument `interpolation`: antialias=True "
            "filters bilinear sampling only. Expected 'bilinear'. Received: "
            f"interpolation={interpolation!r}")
    if shape is not None and (len(shape) != 4 or None in tuple(shape)[1:3]):
        raise ValueError(
            "antialias=True samples 2-D images whose height and width are "
            "known when the op is built ([batch, height, width, channels]). "
            f"Received: images.shape={_text(shape)}")


def _is_floating(dtype):
    return dtype.startswith(("float", "bfloat"))


def check_images_and_grid(images_shape, images_dtype, grid_shape, grid_dtype):
    """Raises unless images and a grid (shapes as tuples, dtypes by name)
    can be sampled together: floating dtypes, rank 4 (or 5), a non-empty
    image, a grid of the same rank holding one coordinate per spatial axis,
    and equal static batch sizes."""
    if not _is_floating(images_dtype):
        raise TypeError(
            "Invalid dtype for argument `images`. Expected a floating dtype "
            f"(cast integer images first). Received: images.dtype="
            f"{images_dtype}"
        )
    if images_shape is None or len(images_shape) not in (4, 5):
        raise ValueError(
            "Invalid shape for argument `images`. Expected a rank-4 tensor "
            "[batch, height, width, channels] (or rank 5 [batch, depth, "
            "height, width, channels]). Received: images.shape="
            f"{_text(images_shape)}"
        )
    spatial = len(images_shape) - 2
    if 0 in images_shape[1:spatial + 1]:
        raise ValueError(
            "Invalid shape for argument `images`. Expected non-empty spatial "
            "dimensions (there is nothing to sample from). Received: "
            f"images.shape={_text(images_shape)}"
        )
    if not _is_floating(grid_dtype):
        raise TypeError(
            "Invalid dtype for argument `grid`. Expected a floating dtype. "
            f"Received: grid.dtype={grid_dtype}"
        )
    if (grid_shape is None or len(grid_shape) != len(images_shape)
            or grid_shape[-1] not in (spatial, None)):
        layout = ("[batch, out_height, out_width, 2] whose last axis holds "
                  "(x, y)") if spatial == 2 else (
            "[batch, out_depth, out_height, out_width, 3] whose last axis "
            "holds (x, y, z)")
        raise ValueError(
            f"Invalid shape for argument `grid`. Expected a rank-"
            f"{spatial + 2} tensor {layout}. Received: grid.shape="
            f"{_text(grid_shape)}"
        )
    if (images_shape[0] is not None and grid_shape[0] is not None
            and images_shape[0] != grid_shape[0]):
        raise ValueError(
            "Arguments `images` and `grid` must have the same batch size. "
            f"Received: images.shape={_text(images_shape)}, "
            f"grid.shape={_text(grid_shape)}"
        )
