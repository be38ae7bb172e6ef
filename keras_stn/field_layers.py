"""Keras layers of dense deformation fields: `Warp` and `IntegrateVelocity`.

Both are written in `keras.ops` through `keras_stn.fields`, so they run on
every Keras backend, save to `.keras` (one file loads on any backend) and,
on TensorFlow, export to builtins-only TFLite.
"""

import keras

from keras_stn import fields
from keras_stn.core.checks import check_interpolation
from keras_stn.core.checks import check_padding_mode


def _check_field_shape(layer, shape, argument):
    shape = tuple(shape)
    if len(shape) not in (4, 5) or shape[-1] != len(shape) - 2:
        raise ValueError(
            f"Invalid shape for the {argument} of layer '{layer.name}'. "
            "Expected (batch, height, width, 2) or (batch, depth, height, "
            f"width, 3). Received: {argument}_shape={shape}")
    return shape


@keras.saving.register_keras_serializable(package="keras_stn")
class Warp(keras.layers.Layer):
    """Warps images by a dense displacement field: `[images, displacement]`.

    The output at pixel p is `images` sampled at p + u(p)
    (`keras_stn.fields.warp`): the spatial transformer of registration
    networks (VoxelMorph), for 2-D images and 3-D volumes.

    Args:
        interpolation: `"bilinear"` (trilinear on volumes), `"nearest"` or
            `"bicubic"` (images only), as in `keras_stn.grid_sample`.
        padding_mode: `"zeros"`, `"border"` or `"reflection"`.
        indexing: `"xy"` (last axis `(x, y[, z])`) or `"ij"` (the array's
            axis order, VoxelMorph's).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[images, displacement]`: images `[batch, height, width,
            channels]` and a field `[batch, out_height, out_width, 2]` in
            pixels of the images (volumes: rank 5 and 3 components).

    Input shape:
        `[(batch, H, W, C), (batch, H', W', 2)]` (or the 3-D shapes).

    Output shape:
        `(batch, H', W', C)` (or `(batch, D', H', W', C)`).

    Example:

    >>> images = keras.Input((28, 28, 1))
    >>> field = keras.layers.Conv2D(2, 3, padding="same")(images)
    >>> warped = keras_stn.Warp()([images, field])
    >>> tuple(warped.shape)
    (None, 28, 28, 1)

    References:
        Jaderberg et al., Spatial Transformer Networks, NeurIPS 2015;
        Balakrishnan et al., VoxelMorph, IEEE TMI 2019.
    """

    def __init__(self, interpolation="bilinear", padding_mode="zeros",
                 indexing="xy", **kwargs):
        super().__init__(**kwargs)
        check_interpolation(interpolation)
        check_padding_mode(padding_mode)
        fields.check_indexing(indexing)
        self.interpolation = interpolation
        self.padding_mode = padding_mode
        self.indexing = indexing

    def _shapes(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(
                input_shape) != 2 or not isinstance(input_shape[0],
                                                    (list, tuple)):
            raise ValueError(
                f"Layer '{self.name}' takes two inputs, [images, "
                f"displacement]. Received: input_shape={input_shape}")
        images = tuple(input_shape[0])
        field = _check_field_shape(self, input_shape[1], "displacement")
        if len(images) != len(field):
            raise ValueError(
                f"Layer '{self.name}': the images and the displacement "
                "must have the same rank. Received: "
                f"images_shape={images}, displacement_shape={field}")
        return images, field

    def build(self, input_shape):
        self._shapes(input_shape)
        self.built = True

    def call(self, inputs):
        images, displacement = inputs
        return fields.warp(images, displacement, self.interpolation,
                           self.padding_mode, self.indexing)

    def compute_output_shape(self, input_shape):
        images, field = self._shapes(input_shape)
        return (images[0] if images[0] is not None else field[0],
                *field[1:-1], images[-1])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation,
                "padding_mode": self.padding_mode, "indexing": self.indexing}


@keras.saving.register_keras_serializable(package="keras_stn")
class IntegrateVelocity(keras.layers.Layer):
    """Integrates a stationary velocity field into a displacement
    (scaling and squaring, `keras_stn.fields.integrate`).

    Its output is diffeomorphic when the velocity is smooth: the
    diffeomorphic variant of a registration network predicts a velocity,
    integrates it here and warps with `Warp`.

    Args:
        steps: int >= 0, squaring steps (0 returns the velocity).
        padding_mode: how the field reads beyond the border while it is
            composed with itself (`"zeros"`, VoxelMorph's, or `"border"`).
        indexing: `"xy"` or `"ij"`, as in `Warp`.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: a velocity `[batch, height, width, 2]` (or 3-D) in pixels.

    Input shape:
        `(batch, H, W, 2)` or `(batch, D, H, W, 3)`.

    Output shape:
        The input's.

    Example:

    >>> velocity = keras.Input((16, 16, 2))
    >>> tuple(keras_stn.IntegrateVelocity(steps=5)(velocity).shape)
    (None, 16, 16, 2)

    References:
        Arsigny et al., A Log-Euclidean framework for statistics on
        diffeomorphisms, MICCAI 2006; Dalca et al., MICCAI 2018.
    """

    def __init__(self, steps=7, padding_mode="zeros", indexing="xy",
                 **kwargs):
        super().__init__(**kwargs)
        self.steps = fields.check_count(steps, "steps", minimum=0)
        check_padding_mode(padding_mode)
        fields.check_indexing(indexing)
        self.padding_mode = padding_mode
        self.indexing = indexing

    def build(self, input_shape):
        _check_field_shape(self, input_shape, "input")
        self.built = True

    def call(self, inputs):
        return fields.integrate(inputs, self.steps, self.padding_mode,
                                self.indexing)

    def compute_output_shape(self, input_shape):
        return _check_field_shape(self, input_shape, "input")

    def get_config(self):
        return {**super().get_config(), "steps": self.steps,
                "padding_mode": self.padding_mode, "indexing": self.indexing}
