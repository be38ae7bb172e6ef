"""Parameterisations of θ: how a localisation net's output becomes a grid.

Each transform knows its number of parameters, its identity parameters and
how to turn a batch of parameters `[batch, num_params]` into a sampling grid
`[batch, height, width, 2]`. Look one up by name with `get(name)`.

Convention:
    Coordinates in [-1, 1], x then y, `align_corners` as in PyTorch. The
    parameters map target (output) coordinates to source (input) coordinates.
"""

import keras
import numpy as np

from keras_stn import backends
from keras_stn.core.checks import shape_of
from keras_stn.core.meshgrid import homogeneous_meshgrid
from keras_stn.kernels import grids


def check_scale(value, name="scale"):
    """Raises a `ValueError` naming `name` unless `value` is a finite
    number > 0 (a zoom's scale, `Transform.zoom`)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.floating, np.integer)) or not (
            np.isfinite(value) and value > 0):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a finite number "
            f"> 0. Received: {name}={value!r}")


class Transform:
    """A parameterisation of θ. Subclasses set `name` and `num_params`.

    A transform's grid is one backend-neutral method, `grid_in` (or
    `coordinates_in`, its per-axis planes), written against an op namespace
    (`keras_stn.kernels`): a new transform is one class. Linear
    parameterisations of the affine matrix (attention, translation) are
    expressed as `θ_flat = params @ expansion + offset`, one matmul that
    TFLite runs as a builtin.
    """

    name = None
    num_params = None
    # 2 for images, 3 for volumes.
    spatial_rank = 2

    # Whether `scale × identity` is the map p -> scale · p (a zoom about the
    # centre): true where the parameters hold the linear part (affine,
    # attention, projective) or the control points (TPS); translation and
    # displacement fields have no scale.
    _identity_scales = True

    @property
    def identity(self):
        """NumPy float32 array `[num_params]` of the identity parameters."""
        raise NotImplementedError

    def zoom(self, scale):
        """The parameters of a zoom about the centre: the map p -> scale · p
        from output to input coordinates, so that the output shows the
        central `scale` fraction of the input (0.5: magnified 2×).

        Args:
            scale: a finite number > 0; 1 is the identity.

        Returns:
            NumPy float32 array `[num_params]`.

        Example:

        >>> keras_stn.transforms.get("attention").zoom(0.5).tolist()
        [0.5, 0.0, 0.0]
        """
        check_scale(scale)
        if scale == 1:
            return self.identity
        if not self._identity_scales:
            raise ValueError(
                f"transform={self.name!r} has no scale to start zoomed with; "
                "expected scale=1 or a transform with one (affine, "
                f"attention, projective, tps). Received: scale={scale!r}")
        return (np.float32(scale) * self.identity).astype(np.float32)

    def for_spatial_rank(self, rank):
        """The transform to warp inputs with `rank` spatial axes, or a
        `ValueError` naming what is supported."""
        if rank == self.spatial_rank:
            return self
        raise ValueError(
            f"transform='{self.name}' warps "
            f"{'images (rank-4 inputs)' if self.spatial_rank == 2 else 'volumes (rank-5 inputs)'}"
            f"; volumes (rank-5 inputs) take transform='affine' (12 "
            f"parameters, a 3×4 θ). Received: an input with {rank} spatial "
            "axes")

    def params_shape_error(self, shape):
        """A message if a localisation output of `shape` is unusable, else None.

        Args:
            shape: the full shape, batch first, of the localisation output.
        """
        if len(shape) == 2 and shape[1] in (self.num_params, None):
            return None
        return self._shape_message(shape, f"[batch, {self.num_params}]")

    def _shape_message(self, shape, expected):
        return (
            f"The localization_net must output {self.num_params} values per "
            f"example for transform='{self.name}', as a tensor of shape "
            f"{expected}. Received: output shape {tuple(shape)}"
        )

    def flatten(self, params):
        """`params` as a float32 (or float64) tensor `[batch, num_params]`,
        of the backend that owns `params`.

        Raises a `ValueError` when the static shape holds some other number
        of values per example; when that number is only known at run time
        (TensorFlow graphs), a run-time check raises instead (rather than
        regrouping the values into a different batch).
        """
        params, backend = backends.checked(params)
        self._check_params(params)
        return backend.flatten(self, params)

    def _check_params(self, params):
        shape = tuple(params.shape)
        if len(shape) < 2 or self.params_shape_error(shape):
            raise ValueError(
                f"Invalid shape for argument `params` of transform "
                f"'{self.name}'. Expected {self._expected_layout()}. "
                f"Received: params.shape={shape_of(params)}"
            )

    def _expected_layout(self):
        return f"[batch, {self.num_params}]"

    def grid(self, params, size, align_corners=False):
        """Sampling grid `[batch, height, width, 2]` for `params`, computed
        by the backend that owns `params`.

        Args:
            params: float tensor `[batch, num_params]`.
            size: `(height, width)` of the output.
            align_corners: bool, as in PyTorch.
        """
        params, backend = backends.checked(params)
        self._check_params(params)
        return backend.transform_grid(self, params, size, align_corners)

    def coordinates(self, params, size, align_corners=False):
        """`grid(params, size, align_corners)` split per axis: `[x, y]`.

        Each `[batch, height, width]`; on TensorFlow, transforms that can
        produce the planes directly do (see `sample_coordinates`).
        """
        params, backend = backends.checked(params)
        self._check_params(params)
        return backend.transform_coordinates(self, params, size, align_corners)

    def expansion_matrices(self):
        """`(expansion, offset)` NumPy arrays with θ = params @ expansion +
        offset for transforms linear in an affine θ, else None."""
        return None

    def grid_in(self, ops, params, size, align_corners):
        """The grid `[batch, *size, k]` of flattened float `params` `[batch,
        num_params]`, in the op namespace `ops` (`keras_stn.kernels`).

        Subclasses define this or `coordinates_in` (or both, where one
        formulation suits each).
        """
        if type(self).coordinates_in is Transform.coordinates_in:
            raise NotImplementedError(
                f"{type(self).__name__} defines neither grid_in nor "
                "coordinates_in")
        return ops.stack(self.coordinates_in(ops, params, size,
                                             align_corners), -1)

    def coordinates_in(self, ops, params, size, align_corners):
        """`grid_in` split per axis: `[x, y[, z]]`, each `[batch, *size]`."""
        return grids.split(self.grid_in(ops, params, size, align_corners))

    def _key(self):
        return (type(self), getattr(self, "control_points", None))

    def __eq__(self, other):
        return isinstance(other, Transform) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"<Transform {self.name!r}: {self.num_params} parameters>"


class _AffineGrid(Transform):
    """A transform whose grid is an affine θ's: `_matrices(ops, params)`
    gives the `[batch, k, k + 1]` matrices."""

    def _matrices(self, ops, params):
        raise NotImplementedError

    def grid_in(self, ops, params, size, align_corners):
        return grids.affine_grid(ops, self._matrices(ops, params), size,
                                 align_corners)

    def coordinates_in(self, ops, params, size, align_corners):
        return grids.affine_planes(ops, self._matrices(ops, params), size,
                                   align_corners)


class _LinearAffine(_AffineGrid):
    """An affine transform whose 6 entries are linear in the parameters."""

    expansion = None  # [num_params, 6]
    offset = None  # [6]

    def expansion_matrices(self):
        return self.expansion, self.offset

    def to_affine(self, params):
        """The `[batch, 6]` row-major affine θ of `params`, a tensor of the
        backend that owns them."""
        params, backend = backends.checked(params)
        return self._affine_in(backend.ops, self.flatten(params))

    def _affine_in(self, ops, params):
        dtype = ops.dtype(params)
        return (ops.matmul(params, ops.constant(self.expansion, dtype))
                + ops.constant(self.offset, dtype))

    def _matrices(self, ops, params):
        return ops.reshape(self._affine_in(ops, params), (-1, 2, 3))


class Affine(_AffineGrid):
    """General 2-D affine θ, 6 parameters `[a, b, tx, c, d, ty]` (row-major).

    The localisation net may output `[batch, 6]` or `[batch, 2, 3]`.
    """

    name = "affine"
    num_params = 6
    matrix_shape = (2, 3)

    def for_spatial_rank(self, rank):
        # "affine" names both: its 3-D counterpart warps volumes.
        return Affine3D() if rank == 3 else super().for_spatial_rank(rank)

    @property
    def identity(self):
        return np.eye(*self.matrix_shape, dtype=np.float32).ravel()

    def params_shape_error(self, shape):
        rows, cols = self.matrix_shape
        if len(shape) == 3 and tuple(shape[1:]) in ((rows, cols), (None, None)):
            return None
        if len(shape) == 2 and shape[1] in (self.num_params, None):
            return None
        return self._shape_message(shape, self._expected_layout())

    def _expected_layout(self):
        rows, cols = self.matrix_shape
        return f"[batch, {self.num_params}] or [batch, {rows}, {cols}]"

    def _matrices(self, ops, params):
        return ops.reshape(params, (-1, *self.matrix_shape))


class Affine3D(Affine):
    """3-D affine θ for volumes: 12 parameters, a row-major 3×4 matrix.

    `SpatialTransformer(transform="affine")` uses it for rank-5 inputs; its
    localisation head is `localization_head("affine_3d")`. The
    localisation net may output `[batch, 12]` or `[batch, 3, 4]`.
    """

    name = "affine_3d"
    num_params = 12
    matrix_shape = (3, 4)
    spatial_rank = 3

    def for_spatial_rank(self, rank):
        if rank == 2:
            raise ValueError(
                "transform='affine_3d' warps volumes (rank-5 inputs); use "
                "transform='affine' for images.")
        return super().for_spatial_rank(rank)


class Attention(_LinearAffine):
    """The paper's attention: 3 parameters `(s, tx, ty)`.

    θ = `[[s, 0, tx], [0, s, ty]]`: isotropic scale and translation.
    """

    name = "attention"
    num_params = 3
    expansion = np.array(
        [[1, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]],
        dtype=np.float32,
    )
    offset = np.zeros(6, dtype=np.float32)

    @property
    def identity(self):
        return np.array([1, 0, 0], dtype=np.float32)


class Translation(_LinearAffine):
    """Pure translation: 2 parameters `(tx, ty)`, θ = `[[1, 0, tx], [0, 1, ty]]`."""

    name = "translation"
    num_params = 2
    expansion = np.array(
        [[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=np.float32
    )
    offset = np.array([1, 0, 0, 0, 1, 0], dtype=np.float32)
    _identity_scales = False

    @property
    def identity(self):
        return np.array([0, 0], dtype=np.float32)


class Projective(Transform):
    """Homography with h33 = 1: 8 parameters, row-major `h11 … h32`.

    Maps output `(x, y)` to input `(u / w, v / w)` where
    `(u, v, w) = H @ (x, y, 1)`; `w` is kept at least `1e-6` away from zero
    (keeping its sign) so a degenerate homography stays finite.
    """

    name = "projective"
    num_params = 8

    @property
    def identity(self):
        return np.array([1, 0, 0, 0, 1, 0, 0, 0], dtype=np.float32)

    def coordinates_in(self, ops, params, size, align_corners):
        return grids.projective_planes(ops, params, size, align_corners)


def _tps_kernel(squared_distance):
    """U(r) = r² log r², with U(0) = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        values = squared_distance * np.log(squared_distance)
    return np.where(squared_distance > 0, values, 0.0)


def _checked_control_points(control_points):
    """`(n, points)`: an int n ≥ 2 gives the n×n grid (`points` None); an
    array-like `[K, 2]` of finite, not collinear points gives `(None,
    points)` as a float64 array."""
    if isinstance(control_points, (bool, np.bool_)):
        control_points = None  # refused below, with the value received
    elif isinstance(control_points, (int, np.integer)):
        if control_points >= 2:
            return int(control_points), None
    elif control_points is not None and not isinstance(control_points, str):
        try:
            points = np.asarray(control_points, dtype=np.float64)
        except (TypeError, ValueError):
            points = None
        if points is not None and points.ndim == 2 and points.shape[1] == 2:
            return None, _checked_points(points, control_points)
    raise ValueError(
        "Invalid value for argument `control_points`. Expected an int n >= 2 "
        "(an n×n grid) or an array of K >= 3 target points, shape [K, 2] in "
        f"normalised (x, y). Received: control_points={control_points!r}")


def _checked_points(points, received):
    if len(points) < 3 or not np.all(np.isfinite(points)):
        problem = ("fewer than 3 points" if len(points) < 3
                   else "non-finite values")
        raise ValueError(
            "Invalid value for argument `control_points`: "
            f"{problem}. Expected K >= 3 finite points [K, 2]. Received: "
            f"control_points={received!r}")
    centred = points - points.mean(axis=0)
    if np.linalg.matrix_rank(centred, tol=1e-9) < 2:
        raise ValueError(
            "Invalid value for argument `control_points`: the points lie on "
            "one line, which leaves the spline's affine part undetermined. "
            f"Received: control_points={received!r}")
    if len(np.unique(points, axis=0)) < len(points):
        raise ValueError(
            "Invalid value for argument `control_points`: two points "
            f"coincide. Received: control_points={received!r}")
    return points


def aster_control_points(count=20, margins=(0.05, 0.05)):
    """The control points of ASTER's and RARE's text rectifier: two rows,
    along the top and the bottom of the output.

    `count // 2` points evenly spaced across each row, the rows and the
    outermost points `margins` in from the output's edges (fractions of its
    width and height, as ASTER gives them: 0.05 → normalised ±0.9). Top row
    first, each row left to right.

    Args:
        count: an even number of points, at least 4 (ASTER: 20).
        margins: `(x, y)` margins, each in [0, 0.5).

    Returns:
        A float32 array `[count, 2]` of normalised `(x, y)` points, for
        `SpatialTransformer(transform="tps", control_points=...)`.

    Example:

    >>> keras_stn.transforms.aster_control_points(4).tolist()
    [[-0.8999999761581421, -0.8999999761581421], [0.8999999761581421, -0.8999999761581421], [-0.8999999761581421, 0.8999999761581421], [0.8999999761581421, 0.8999999761581421]]
    """
    if (isinstance(count, (bool, np.bool_))
            or not isinstance(count, (int, np.integer)) or count < 4
            or count % 2):
        raise ValueError(
            "Invalid value for argument `count`. Expected an even int >= 4. "
            f"Received: count={count!r}")
    try:
        margin_x, margin_y = (float(m) for m in margins)
    except (TypeError, ValueError):
        margin_x = margin_y = None
    if margin_x is None or not (0.0 <= margin_x < 0.5 and
                                0.0 <= margin_y < 0.5):
        raise ValueError(
            "Invalid value for argument `margins`. Expected (x, y), each in "
            f"[0, 0.5). Received: margins={margins!r}")
    x = np.linspace(2.0 * margin_x - 1.0, 1.0 - 2.0 * margin_x, count // 2)
    rows = [np.stack([x, np.full_like(x, y)], axis=-1)
            for y in (2.0 * margin_y - 1.0, 1.0 - 2.0 * margin_y)]
    return np.concatenate(rows).astype(np.float32)


class ThinPlateSpline(Transform):
    """Thin-plate spline through fixed control points.

    The control points are fixed positions over the output, in normalised
    `(x, y)`: an n×n grid at `linspace(-1, 1, n)` (row-major, x fastest)
    for an int `control_points`, or any K points given as an array `[K, 2]`
    (e.g. `aster_control_points()`, two rows along the top and bottom edges
    for text rectification). θ holds, for each control point, the **source
    position** `(x, y)` in the input it maps to: `2 K` values ordered
    `x0, y0, x1, y1, …`. The identity θ is the control points themselves.
    Every other output point maps to the thin-plate-spline interpolation
    (kernel `U(r) = r² log r²` plus an affine part) of those positions, which
    passes through every control point exactly.

    The spline system depends only on the control points, so it is solved
    once, in NumPy: the grid is one matmul of a constant
    `[height * width, K]` matrix with θ — TFLite builtins only, no run-time
    matrix inverse.

    Args:
        control_points: an int n ≥ 2 (an n×n grid, `2 n²` parameters), or
            an array-like `[K, 2]` of K ≥ 3 finite, distinct, not collinear
            points (`2 K` parameters).
    """

    name = "tps"

    def __init__(self, control_points=4):
        grid_side, points = _checked_control_points(control_points)
        if points is None:
            side = np.linspace(-1.0, 1.0, grid_side)
            x, y = np.meshgrid(side, side)
            points = np.stack([x.ravel(), y.ravel()], axis=-1)
            self.control_points = grid_side
        else:
            # Hashable and JSON-serialisable: a tuple of (x, y) pairs.
            self.control_points = tuple(
                (float(x), float(y)) for x, y in points)
        self._points = points  # [K, 2], float64
        count = len(points)
        self.num_params = 2 * count
        affine = np.concatenate([np.ones((count, 1)), points], axis=1)
        system = np.zeros((count + 3, count + 3))
        system[:count, :count] = _tps_kernel(
            np.sum((points[:, None] - points[None]) ** 2, -1)
        )
        system[:count, count:] = affine
        system[count:, :count] = affine.T
        # Only the columns that multiply the positions matter: the spline's
        # coefficients are inverse[:, :K] @ positions.
        self._inverse = np.linalg.inv(system)[:, :count]
        self._matrices = {}

    @property
    def points(self):
        """The fixed control points, float32 `[K, 2]`."""
        return self._points.astype(np.float32)

    def control_points_config(self):
        """`control_points` as a config holds it: the int n, or the points
        as a list of `[x, y]` lists."""
        if isinstance(self.control_points, int):
            return self.control_points
        return [list(point) for point in self.control_points]

    @property
    def identity(self):
        return self._points.astype(np.float32).ravel()

    def interpolation_matrix(self, size, align_corners=False):
        """NumPy `[height * width, K]` matrix M with grid = M @ positions."""
        key = (tuple(size), align_corners)
        if key not in self._matrices:
            targets = homogeneous_meshgrid(size, align_corners, np.float64)
            targets = targets[:, :2]
            kernel = _tps_kernel(
                np.sum((targets[:, None] - self._points[None]) ** 2, -1)
            )
            basis = np.concatenate(
                [kernel, np.ones((len(targets), 1)), targets], axis=1
            )
            self._matrices[key] = basis @ self._inverse
        return self._matrices[key]

    def grid_in(self, ops, params, size, align_corners):
        positions = ops.reshape(params, (-1, len(self._points), 2))
        return grids.interpolated_grid(
            ops, self.interpolation_matrix(size, align_corners), positions,
            size)

    def __repr__(self):
        if isinstance(self.control_points, int):
            layout = f"{self.control_points}x{self.control_points}"
        else:
            layout = f"{len(self._points)}"
        return (f"<Transform 'tps': {layout} control points, "
                f"{self.num_params} parameters>")


class Displacement(Transform):
    """A dense displacement field: the localisation net emits
    `[batch, h, w, 2]` (volumes `[batch, d, h, w, 3]`) in pixels of the
    input, at any resolution; `SpatialTransformer` resizes it to the output
    size (`keras_stn.fields.resize`) and warps with `keras_stn.fields.warp`.
    Its identity is the zero field; `align_corners` does not apply.
    """

    name = "displacement"
    num_params = None
    _identity_scales = False

    def __init__(self, spatial_rank=2):
        self.spatial_rank = spatial_rank

    def for_spatial_rank(self, rank):
        return self if rank == self.spatial_rank else Displacement(rank)

    @property
    def identity(self):
        return np.zeros((), np.float32)

    def params_shape_error(self, shape):
        rank = self.spatial_rank
        if len(shape) == rank + 2 and shape[-1] == rank:
            return None
        layout = ("[batch, height, width, 2]" if rank == 2
                  else "[batch, depth, height, width, 3]")
        return (
            "The localization_net must output a displacement field for "
            f"transform='displacement', as a tensor of shape {layout} (any "
            f"spatial size). Received: output shape {tuple(shape)}")

    def _expected_layout(self):
        return ("[batch, height, width, 2]" if self.spatial_rank == 2
                else "[batch, depth, height, width, 3]")

    def flatten(self, params):
        """The field itself, float32 (float64 kept), after a shape check."""
        params, _ = backends.checked(params)
        error = self.params_shape_error(tuple(params.shape))
        if error:
            raise ValueError(
                f"Invalid shape for argument `params` of transform "
                f"'displacement'. Expected {self._expected_layout()}. "
                f"Received: params.shape={shape_of(params)}")
        dtype = ("float64" if keras.backend.standardize_dtype(params.dtype)
                 == "float64" else "float32")
        return keras.ops.cast(params, dtype)

    def _key(self):
        return (type(self), self.spatial_rank)


_TRANSFORMS = {
    cls.name: cls
    for cls in (Affine, Attention, Translation, Projective, ThinPlateSpline,
                Affine3D, Displacement)
}
SUPPORTED_TRANSFORMS = tuple(_TRANSFORMS)


def get(name, control_points=None):
    """Returns the `Transform` registered under `name`.

    Args:
        name: one of `SUPPORTED_TRANSFORMS`: `"affine"`, `"attention"`,
            `"translation"`, `"projective"`, `"tps"` (thin-plate spline),
            `"affine_3d"` (volumes), `"displacement"` (a dense field); or an
            instance of one of these
            transforms' classes, returned as is. `SpatialTransformer` takes
            the same.
        control_points: for `"tps"` only: the n of an n×n grid of control
            points (default 4: the paper's 16 points), or an array `[K, 2]`
            of fixed points (`ThinPlateSpline`).

    Returns:
        A `Transform` instance.

    Example:

    >>> keras_stn.transforms.get("attention").num_params
    3
    >>> keras_stn.transforms.get("tps", control_points=3).num_params
    18
    """
    if isinstance(name, Transform):
        if type(name) is not _TRANSFORMS.get(name.name):
            raise TypeError(
                "Invalid value for argument `transform`. Expected one of "
                f"{SUPPORTED_TRANSFORMS} or an instance of their classes "
                "(a transform must be serialisable by name). Received: "
                f"{type(name).__name__} instance {name!r}")
        if control_points is not None and (
                not isinstance(name, ThinPlateSpline)
                or ThinPlateSpline(control_points) != name):
            raise ValueError(
                "Argument `control_points` contradicts the transform "
                f"instance given. Received: transform={name!r}, "
                f"control_points={control_points!r}")
        return name
    if not isinstance(name, str) or name not in _TRANSFORMS:
        raise ValueError(
            "Invalid value for argument `transform`. Expected one of "
            f"{SUPPORTED_TRANSFORMS}. Received: transform={name!r}"
        )
    if name == ThinPlateSpline.name:
        return ThinPlateSpline(4 if control_points is None else control_points)
    if control_points is not None:
        raise ValueError(
            "Argument `control_points` applies to transform='tps' only. "
            f"Received: transform={name!r}, control_points={control_points!r}"
        )
    return _TRANSFORMS[name]()
