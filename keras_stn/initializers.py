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
            (default 4).

    Example:

    >>> init = keras_stn.IdentityInitializer("affine")
    >>> init((6,)).numpy().tolist()
    [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    """

    def __init__(self, transform="affine", control_points=None):
        self.transform = transform
        self.control_points = control_points
        self._identity = transforms_lib.get(transform, control_points).identity

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
                "control_points": self.control_points}


def localization_head(transform="affine", control_points=None, **dense_kwargs):
    """The last layer of a localisation net, starting at the identity.

    A `keras.layers.Dense(num_params)` with a zero kernel and a bias set to
    the identity parameters of `transform`, so that θ is the identity for
    every input until training moves it.

    Args:
        transform: name of the transform the head feeds, one of
            `keras_stn.transforms.SUPPORTED_TRANSFORMS`.
        control_points: for `"tps"`, the n of its n×n control points
            (default 4); must match the `SpatialTransformer`'s.
        **dense_kwargs: passed to `keras.layers.Dense` (e.g. `name`,
            `kernel_initializer` to start from small random weights instead
            of zeros, `kernel_regularizer`). `units`, `bias_initializer` and
            `use_bias` are fixed by the transform.

    Returns:
        A `keras.layers.Dense` layer.

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
    return keras.layers.Dense(
        transforms_lib.get(transform, control_points).num_params,
        bias_initializer=IdentityInitializer(transform, control_points),
        **dense_kwargs,
    )
