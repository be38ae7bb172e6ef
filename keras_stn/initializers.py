"""Identity start for localisation nets: a bias initializer and a head layer."""

import keras
import numpy as np

from keras_stn import transforms as transforms_lib


@keras.saving.register_keras_serializable(package="keras_stn")
class IdentityInitializer(keras.initializers.Initializer):
    """Initializes a vector to the identity parameters of a transform.

    Used as the bias of the localisation net's last `Dense` layer (with a
    zero kernel), so that a freshly built spatial transformer starts as the
    identity, as Jaderberg et al. (2015) recommend. Keras' `Constant`
    initializer takes scalars only, hence this one.

    Args:
        transform: name of the transform, one of
            `keras_stn.transforms.SUPPORTED_TRANSFORMS`.
        control_points: for `"tps"`, the n of its n×n control points
            (default 4) or an array `[K, 2]` of control points.
        activation: `None` (default), `"tanh"` or `"sigmoid"`: the bounded
            activation the head applies after the bias, whose inverse the
            bias then holds (`localization_head(..., activation=...)`).
        scale: start zoomed about the centre instead (`Transform.zoom`):
            the output shows the central `scale` fraction of the input,
            e.g. 0.5 where the object is about half the input's size. 1
            (default) is the identity.

    Example:

    >>> init = keras_stn.IdentityInitializer("affine")
    >>> init((6,)).numpy().tolist()
    [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    >>> keras_stn.IdentityInitializer("affine", scale=0.5)((6,)).numpy().tolist()
    [0.5, 0.0, 0.0, 0.0, 0.5, 0.0]
    """

    def __init__(self, transform="affine", control_points=None,
                 activation=None, scale=1.0):
        transform_object = transforms_lib.get(transform, control_points)
        if isinstance(transform_object, transforms_lib.ThinPlateSpline) and (
                control_points is not None):
            control_points = transform_object.control_points_config()
        self.transform = transform
        self.control_points = control_points
        self.activation = activation
        self.scale = scale
        self._identity = _pre_activation(transform_object.zoom(scale),
                                         activation, transform)

    def __call__(self, shape, dtype=None):
        if tuple(shape) != self._identity.shape:
            raise ValueError(
                "Invalid shape for IdentityInitializer(transform="
                f"'{self.transform}'). Expected {self._identity.shape} "
                f"(the transform's number of parameters). Received: "
                f"shape={tuple(shape)}"
            )
        dtype = dtype or keras.config.floatx()
        return keras.ops.convert_to_tensor(
            np.asarray(self._identity), dtype=dtype
        )

    def get_config(self):
        return {"transform": self.transform,
                "control_points": self.control_points,
                "activation": self.activation, "scale": self.scale}


_BOUNDED_ACTIVATIONS = (None, "tanh", "sigmoid")


def _pre_activation(identity, activation, transform):
    """The bias whose bounded activation is `identity` (itself without
    one). `"sigmoid"` heads output `2 σ(z) − 1`, in [-1, 1] like tanh."""
    if activation not in _BOUNDED_ACTIVATIONS:
        raise ValueError(
            "Invalid value for argument `activation`. Expected one of "
            f"{_BOUNDED_ACTIVATIONS}. Received: activation={activation!r}")
    if activation is None:
        return identity
    identity = np.asarray(identity, np.float64)
    if np.any(np.abs(identity) >= 1.0):
        raise ValueError(
            f"A bounded ({activation}) head outputs values in (-1, 1), so it "
            f"cannot start at the identity of transform={transform!r}, which "
            f"holds {sorted(set(identity[np.abs(identity) >= 1].tolist()))}. "
            "Expected identity parameters strictly inside (-1, 1), e.g. "
            "thin-plate-spline control points with margins "
            "(keras_stn.transforms.aster_control_points()). Received: "
            f"activation={activation!r}")
    # tanh(z) = identity; 2 σ(z) − 1 = tanh(z / 2) = identity.
    scale = 1.0 if activation == "tanh" else 2.0
    return (scale * np.arctanh(identity)).astype(np.float32)


def localization_head(transform="affine", control_points=None,
                      activation=None, scale=1.0, **dense_kwargs):
    """The last layer of a localisation net, starting at the identity.

    A `keras.layers.Dense(num_params)` with a zero kernel and a bias set to
    the identity parameters of `transform`, so that θ is the identity for
    every input until training moves it. With a bounded `activation`, θ
    stays in (-1, 1) whatever the net computes (ASTER's rectifier bounds its
    control points so): `"tanh"` is `Dense(activation="tanh")`, `"sigmoid"`
    is `2 σ(z) − 1` (a sigmoid `Dense` and `Rescaling(2, offset=-1)`), each
    with the bias whose activation is the identity.

    Args:
        transform: name of the transform the head feeds, one of
            `keras_stn.transforms.SUPPORTED_TRANSFORMS`.
        control_points: for `"tps"`, the n of its n×n control points
            (default 4) or an array `[K, 2]`; must match the
            `SpatialTransformer`'s.
        activation: `None` (default: linear), `"tanh"` or `"sigmoid"`. A
            bounded head needs identity parameters inside (-1, 1): control
            points with margins, e.g. `aster_control_points()`.
        scale: start as a zoom about the centre showing the central `scale`
            fraction of the input (`IdentityInitializer`); 1 (default) is
            the identity.
        **dense_kwargs: passed to `keras.layers.Dense` (e.g. `name`,
            `kernel_initializer` to start from small random weights instead
            of zeros, `kernel_regularizer`). `units`, `bias_initializer`,
            `use_bias` and `activation` are fixed by the transform.

    Returns:
        A `keras.layers.Dense` layer (for `"sigmoid"`, a `keras.Sequential`
        of the `Dense` and its rescaling).

    Example:

    >>> head = keras_stn.localization_head("attention")
    >>> head(np.ones((2, 5), "float32")).numpy().tolist()
    [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    """
    fixed = {"units", "bias_initializer", "use_bias", "activation"}
    clashing = sorted(fixed & set(dense_kwargs))
    if clashing:
        raise ValueError(
            f"localization_head() fixes {sorted(fixed)} so that it starts at "
            f"the identity. Received: {', '.join(clashing)}"
        )
    dense_kwargs.setdefault("kernel_initializer", "zeros")
    dense = keras.layers.Dense(
        transforms_lib.get(transform, control_points).num_params,
        bias_initializer=IdentityInitializer(transform, control_points,
                                             activation, scale),
        activation=activation,
        **dense_kwargs,
    )
    if activation != "sigmoid":
        return dense
    return keras.Sequential([dense, keras.layers.Rescaling(2.0, offset=-1.0)],
                            name=dense_kwargs.get("name"))
