"""The `SpatialTransformer` Keras layer."""

import copy

import keras
import numpy as np
from keras import ops

from keras_stn import backends
from keras_stn import fields
from keras_stn import sampling
from keras_stn import transforms as transforms_lib
from keras_stn.core.scopes import GRID_SCOPE  # noqa: F401 (export)
from keras_stn.core.scopes import SAMPLER_SCOPE  # noqa: F401
from keras_stn.core.checks import check_size
from keras_stn.core.meshgrid import check_grid_memory
from keras_stn.core.checks import check_align_corners
from keras_stn.core.checks import check_antialias
from keras_stn.core.checks import check_interpolation
from keras_stn.core.checks import check_padding_mode
from keras_stn.core.coordinates import coordinate_dtype

_SUPPORTED_DATA_FORMATS = ("channels_last", "channels_first")


def _coordinate_dtype(dtype):
    """θ and the grid: float64 under a float64 policy, else float32."""
    return coordinate_dtype(keras.backend.standardize_dtype(dtype))


def _check_output_size(output_size):
    if output_size is None:
        return None
    return check_size(output_size, ranks=(2, 3), argument="output_size")


def _check_non_negative(name, value, strictly=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            f"Invalid value for argument `{name}`. Expected a number. "
            f"Received: {name}={value!r}")
    if not np.isfinite(value) or value < 0 or (strictly and value == 0):
        bound = "> 0" if strictly else ">= 0"
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a finite number "
            f"{bound}. Received: {name}={value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package="keras_stn")
class SpatialTransformer(keras.layers.Layer):
    """Spatial transformer: warps its input by a θ it predicts from it.

    A localisation net (any Keras layer or model, supplied by the user)
    regresses the transform parameters θ from the layer's input; a grid
    generator maps every pixel of the output to a point of the input (a
    batched matmul of the normalised target meshgrid with θ); a sampler reads
    the input there (gather-based bilinear or nearest interpolation). All
    three are plain TensorFlow ops: gradients reach both the input and θ, so
    the localisation net trains end to end with the rest of the model, and
    the layer converts to TFLite with builtin ops only.

    Coordinates follow PyTorch's `affine_grid` / `grid_sample`: normalised
    to [-1, 1], x then y, θ maps output coordinates to input coordinates,
    `align_corners` with PyTorch's meaning. The identity affine θ is
    `[1, 0, 0, 0, 1, 0]`; end the localisation net with
    `keras_stn.localization_head(transform)` to start at it.

    Args:
        localization_net: a `keras.layers.Layer` (or `keras.Model`) mapping
            the layer's input to θ of shape `[batch, num_params]`
            (`"affine"` also accepts `[batch, 2, 3]`). Its weights are this
            layer's weights; it is available as `.localization_net`.
        output_size: `(height, width)` of the output, or `None` (default) to
            keep the input's spatial size.
        transform: the parameterisation of θ, by name or as a
            `keras_stn.transforms` instance: `"affine"` (6 parameters,
            row-major 2×3 matrix), `"attention"` (3: `s, tx, ty`, θ =
            `[[s, 0, tx], [0, s, ty]]`), `"translation"` (2: `tx, ty`),
            `"projective"` (8: a 3×3 homography with h33 = 1, row-major)
            , `"tps"` (thin-plate spline, `2 n²`: see `control_points`) or
            `"displacement"`: the net emits a dense field `[batch, h, w, 2]`
            (x, y) at any resolution, in pixels of that resolution; it is
            resized to the output size (`keras_stn.fields.resize`, values
            rescaled), converted to input pixels and warped by
            (`fields.warp`; `align_corners` does not apply; `return_theta`
            returns that field, in input pixels).
        interpolation: `"bilinear"` (default) or `"nearest"`.
        padding_mode: what samples outside the input read: `"zeros"`
            (default), `"border"` or `"reflection"`, as in PyTorch.
        align_corners: bool, as in PyTorch (default `False`).
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.
        control_points: for `transform="tps"` only: n, for an n×n grid of
            control points (default 4, the paper's 16), or an array `[K, 2]`
            of fixed control points over the output in normalised `(x, y)`
            (e.g. `keras_stn.transforms.aster_control_points()`, two rows
            for text rectification). θ then holds the `2 n²` (`2 K`) source
            positions `(x, y)` of the control points (not offsets);
            `localization_head("tps", control_points=...)` starts at the
            identity.
        antialias: bool (default False): prefilter where the warp shrinks
            the input (a mip-map blended per output pixel, as
            `keras_stn.grid_sample(..., antialias=True)`); where it
            magnifies, plain sampling. Bilinear images only.
        localization_size: `(height, width)`, or `None` (default): the
            localisation net sees the input bilinearly resized to this size
            (as ASTER's rectifier sees a small copy of a large crop); the
            sampler still reads the full input. Images only.
        localization_lr_multiplier: positive float (default 1). Scales the
            gradient flowing into the localisation net (the forward pass is
            unchanged), e.g. 0.1 to train it 10× slower as the paper does on
            SVHN. With plain SGD (and momentum) this is exactly a learning
            rate multiplier; Adam-like optimisers normalise gradient scale
            per weight, so there it mostly acts through their epsilon.
        identity_regularization: float >= 0 (default 0). Adds
            `weight × mean over the batch of ||θ − θ_identity||²` to the
            model's losses, pulling θ toward the identity (against θ that
            explodes and blank outputs).
        return_theta: if True, the layer returns `(output, theta)`, θ as a
            `[batch, num_params]` tensor, for inspection (use it in
            functional models). θ is float32 (float64 under a float64 dtype
            policy) whatever the compute dtype, as the grid is.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a float tensor `[batch, height, width, channels]`
            (`[batch, channels, height, width]` for `"channels_first"`).
        training: passed to the localisation net.

    Input shape:
        4D tensor `(batch, height, width, channels)` or
        `(batch, channels, height, width)`.

    Output shape:
        4D tensor `(batch, out_height, out_width, channels)` or
        `(batch, channels, out_height, out_width)`, where
        `(out_height, out_width)` is `output_size` or the input's size.
        With `return_theta=True`, a tuple of that and θ's
        `(batch, num_params)`.

    Example:

    >>> localization_net = keras.Sequential([
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(16, activation="relu"),
    ...     keras_stn.localization_head("affine"),
    ... ])
    >>> model = keras.Sequential([
    ...     keras.Input((28, 28, 1)),
    ...     keras_stn.SpatialTransformer(localization_net, output_size=(14, 14)),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(10),
    ... ])
    >>> model(np.zeros((2, 28, 28, 1), "float32")).shape
    TensorShape([2, 10])

    References:
        - [Jaderberg et al., 2015. Spatial Transformer Networks](
          https://arxiv.org/abs/1506.02025)
    """

    def __init__(
        self,
        localization_net,
        output_size=None,
        transform="affine",
        interpolation="bilinear",
        padding_mode="zeros",
        align_corners=False,
        data_format=None,
        control_points=None,
        antialias=False,
        localization_size=None,
        localization_lr_multiplier=1.0,
        identity_regularization=0.0,
        return_theta=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(localization_net, keras.layers.Layer):
            raise TypeError(
                "Invalid value for argument `localization_net`. Expected a "
                "keras.layers.Layer or keras.Model instance. Received: "
                f"localization_net={localization_net!r} of type "
                f"{type(localization_net).__name__}"
            )
        self._transform = transforms_lib.get(transform, control_points)
        if isinstance(transform, transforms_lib.Transform):
            # Serialised by name (and control points): what `get` takes.
            transform = self._transform.name
            control_points = getattr(self._transform, "control_points", None)
        if isinstance(self._transform, transforms_lib.ThinPlateSpline) and (
                control_points is not None):
            # Points as a config holds them (lists), an n as it is.
            control_points = self._transform.control_points_config()
        check_interpolation(interpolation)
        check_padding_mode(padding_mode)
        check_align_corners(align_corners)
        check_antialias(antialias, interpolation)
        if data_format is None:
            data_format = keras.config.image_data_format()
        if data_format not in _SUPPORTED_DATA_FORMATS:
            raise ValueError(
                "Invalid value for argument `data_format`. Expected one of "
                f"{_SUPPORTED_DATA_FORMATS}. Received: "
                f"data_format={data_format!r}"
            )
        self.localization_net = localization_net
        self.output_size = _check_output_size(output_size)
        self.transform = transform
        self.interpolation = interpolation
        self.padding_mode = padding_mode
        self.align_corners = align_corners
        self.data_format = data_format
        self.control_points = control_points
        self.antialias = bool(antialias)
        self.localization_size = (
            None if localization_size is None else check_size(
                localization_size, ranks=(2,), argument="localization_size"))
        self.localization_lr_multiplier = _check_non_negative(
            "localization_lr_multiplier", localization_lr_multiplier,
            strictly=True)
        self.identity_regularization = _check_non_negative(
            "identity_regularization", identity_regularization)
        if not isinstance(return_theta, bool):
            raise TypeError(
                "Invalid value for argument `return_theta`. Expected a bool. "
                f"Received: return_theta={return_theta!r}")
        self.return_theta = return_theta

    def _spatial_axes(self, rank):
        if self.data_format == "channels_last":
            return tuple(range(1, rank - 1))
        return tuple(range(2, rank))

    def _transform_for(self, rank):
        """The transform for rank-`rank` inputs (its 3-D counterpart for
        volumes), or a `ValueError` naming the layer."""
        try:
            return self._transform.for_spatial_rank(rank - 2)
        except ValueError as error:
            raise ValueError(f"Layer '{self.name}': {error}") from None

    def _check_input_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) not in (4, 5):
            layout = (
                "(batch, height, width, channels)"
                if self.data_format == "channels_last"
                else "(batch, channels, height, width)"
            )
            raise ValueError(
                f"Invalid input shape for layer '{self.name}'. Expected a "
                f"rank-4 input {layout} (or a rank-5 volume). Received: "
                f"input_shape={input_shape}"
            )
        if self.output_size is not None and len(self.output_size) != len(
            input_shape
        ) - 2:
            raise ValueError(
                f"Layer '{self.name}' has output_size={self.output_size}, "
                f"which does not match its rank-{len(input_shape)} input "
                f"{input_shape}: expected {len(input_shape) - 2} sizes.")
        self._transform_for(len(input_shape))
        return input_shape

    def _target_size(self, input_shape):
        if self.output_size is not None:
            return self.output_size
        sizes = [input_shape[axis]
                 for axis in self._spatial_axes(len(input_shape))]
        if any(size is None for size in sizes):
            raise ValueError(
                f"Layer '{self.name}' has output_size=None, which keeps the "
                "input's spatial size, so that size must be known. Pass "
                "`output_size=(height, width)` or give the input a static "
                f"spatial size. Received: input_shape={tuple(input_shape)}"
            )
        return tuple(int(size) for size in sizes)

    def _localization_shape(self, input_shape):
        """The shape of what the localisation net sees."""
        if self.localization_size is None:
            return tuple(input_shape)
        if len(input_shape) != 4:
            raise ValueError(
                f"Layer '{self.name}' has localization_size="
                f"{self.localization_size}, which applies to images (rank "
                f"4). Received: input_shape={tuple(input_shape)}")
        if self.data_format == "channels_last":
            return (input_shape[0], *self.localization_size, input_shape[-1])
        return (input_shape[0], input_shape[1], *self.localization_size)

    def _localization_inputs(self, inputs):
        if self.localization_size is None:
            return inputs
        return ops.image.resize(inputs, self.localization_size,
                                interpolation="bilinear",
                                data_format=self.data_format)

    def build(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        if self.antialias and len(input_shape) != 4:
            raise ValueError(
                f"Layer '{self.name}' has antialias=True, which filters 2-D "
                f"images (rank 4). Received: input_shape={input_shape}")
        check_grid_memory(self._target_size(input_shape),
                          argument="output_size")
        # A symbolic call builds any localisation net (Sequential, functional
        # or subclassed) and tells the shape of θ before any data flows.
        theta = self.localization_net(
            keras.KerasTensor(self._localization_shape(input_shape),
                              dtype=self.compute_dtype)
        )
        transform = self._transform_for(len(input_shape))
        error = transform.params_shape_error(tuple(theta.shape))
        if error:
            raise ValueError(f"Layer '{self.name}': {error}")
        self.built = True

    def call(self, inputs, training=None):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if not dtype.startswith(("float", "bfloat")):
            raise TypeError(
                f"Invalid dtype for the input of layer '{self.name}'. "
                f"Expected a floating dtype. Received: {dtype}"
            )
        rank = len(self._check_input_shape(inputs.shape))
        self._localization_shape(inputs.shape)
        transform = self._transform_for(rank)
        theta = self.localization_net(self._localization_inputs(inputs),
                                      training=training)
        # float32 (float64 under a float64 policy), checked to hold
        # num_params values per example even when its shape is dynamic.
        theta = transform.flatten(
            ops.cast(theta, _coordinate_dtype(self.compute_dtype)))
        if self.localization_lr_multiplier != 1.0:
            # Same value forward; the gradient reaching the localisation
            # net is scaled by the multiplier.
            frozen = ops.stop_gradient(theta)
            theta = frozen + self.localization_lr_multiplier * (theta - frozen)
        if self.identity_regularization > 0.0:
            identity = ops.convert_to_tensor(transform.identity, theta.dtype)
            self.add_loss(self.identity_regularization * ops.mean(
                ops.sum(ops.square(theta - identity), axis=-1)))
        images = inputs
        if self.data_format == "channels_first":
            images = ops.transpose(images, [0, *range(2, rank), 1])
        # The grid generator and the sampler, by the backend owning the
        # tensors (on TensorFlow, in the name scopes TFLite export keeps
        # in float when the rest of the model is quantised).
        size = self._target_size(inputs.shape)
        if transform.name == "displacement":
            # The field, at whatever resolution the net emits, resized to
            # the output (values rescaled with it), then warped by.
            theta = fields.resize(theta, size)
            input_size = tuple(images.shape[1:-1])
            if input_size != size:
                # From output pixels to the input's, which warp takes.
                theta = theta * ops.convert_to_tensor(
                    [i / o for i, o in zip(input_size[::-1], size[::-1])],
                    theta.dtype)
            outputs = fields.warp(images, theta, self.interpolation,
                                  self.padding_mode, antialias=self.antialias)
        elif self.antialias:
            grid = backends.for_values(images, theta).transform_grid(
                transform, theta, size, self.align_corners)
            outputs = sampling.grid_sample(
                images, grid, self.interpolation, self.padding_mode,
                self.align_corners, antialias=True)
        else:
            outputs = backends.for_values(images, theta).warp(
                images, transform, theta, size, self.interpolation,
                self.padding_mode, self.align_corners)
        if self.data_format == "channels_first":
            outputs = ops.transpose(outputs, [0, rank - 1, *range(1, rank - 1)])
        if self.return_theta:
            return outputs, theta
        return outputs

    def compute_output_spec(self, inputs, training=None):
        output_shape = self.compute_output_shape(inputs.shape)
        theta_dtype = _coordinate_dtype(self.compute_dtype)
        if self.return_theta:
            shape, theta_shape = output_shape
            return (keras.KerasTensor(shape, dtype=self.compute_dtype),
                    keras.KerasTensor(theta_shape, dtype=theta_dtype))
        return keras.KerasTensor(output_shape, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        input_shape = self._check_input_shape(input_shape)
        size = self._target_size(input_shape)
        if self.data_format == "channels_last":
            shape = (input_shape[0], *size, input_shape[-1])
        else:
            shape = (input_shape[0], input_shape[1], *size)
        if self.return_theta:
            transform = self._transform_for(len(input_shape))
            if transform.name == "displacement":
                return shape, (input_shape[0], *size, len(size))
            return shape, (input_shape[0], transform.num_params)
        return shape

    def get_config(self):
        return {
            **super().get_config(),
            "localization_net": keras.saving.serialize_keras_object(
                self.localization_net
            ),
            "output_size": self.output_size,
            "transform": self.transform,
            "interpolation": self.interpolation,
            "padding_mode": self.padding_mode,
            "align_corners": self.align_corners,
            "data_format": self.data_format,
            "control_points": self.control_points,
            "antialias": self.antialias,
            "localization_size": self.localization_size,
            "localization_lr_multiplier": self.localization_lr_multiplier,
            "identity_regularization": self.identity_regularization,
            "return_theta": self.return_theta,
        }

    @classmethod
    def from_config(cls, config):
        # Deserialising a functional model consumes its config in place.
        config = copy.deepcopy(config)
        if isinstance(config.get("localization_net"), dict):
            config["localization_net"] = keras.saving.deserialize_keras_object(
                config["localization_net"]
            )
        return cls(**config)
