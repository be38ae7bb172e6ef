"""Models that hold one spatial transformer per sampling mode, for the
export tests (TFLite and ONNX): every transform, interpolation, padding and
`align_corners`, side by side on one input so that one conversion checks
them all."""

import itertools

import keras

import keras_stn

TRANSFORMS = ("affine", "attention", "translation", "projective", "tps")


def st_model(transform="affine", interpolation="bilinear",
             padding_mode="zeros", align_corners=False, input_shape=(10, 12, 2),
             output_size=(7, 9)):
    # Small random kernels: θ varies with the input, around the identity.
    loc = keras.Sequential([
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras_stn.localization_head(
            transform, kernel_initializer=keras.initializers.RandomNormal(
                stddev=0.3, seed=1)),
    ])
    return keras.Sequential([
        keras.Input(input_shape),
        keras_stn.SpatialTransformer(
            loc, output_size=output_size, transform=transform,
            interpolation=interpolation, padding_mode=padding_mode,
            align_corners=align_corners),
    ])


PADDINGS_AND_ALIGNS = list(itertools.product(("zeros", "border", "reflection"),
                                             (False, True)))
# (transform, interpolation): bicubic is the affine transform's only.
MODES = list(itertools.product(TRANSFORMS, ("bilinear", "nearest"))) + [
    ("affine", "bicubic")]


# Every (transform, interpolation) × padding × align_corners: 66 transformers.
EVERY_MODE = [(transform, interpolation, padding_mode, align_corners)
              for transform, interpolation in MODES
              for padding_mode, align_corners in PADDINGS_AND_ALIGNS]


def side_by_side(modes, input_shape=(10, 12, 2)):
    """One model holding a transformer per mode, on the same input, outputs
    concatenated on channels (one conversion checks them all)."""
    inputs = keras.Input(input_shape)
    outputs = [st_model(*mode, input_shape=input_shape)(inputs)
               for mode in modes]
    return keras.Model(inputs, keras.layers.Concatenate()(outputs))


# The default run: every interpolation × padding × align_corners on the
# affine transform, and every other transform's grid once per interpolation
# (the sampler's modes do not depend on the transform that made the grid).
MODE_GROUPS = {
    **{f"affine-{interpolation}": [
        ("affine", interpolation, padding_mode, align_corners)
        for padding_mode, align_corners in PADDINGS_AND_ALIGNS]
       for interpolation in ("bilinear", "nearest", "bicubic")},
    "other-transforms": [
        (transform, interpolation, padding_mode, False)
        for transform in TRANSFORMS[1:]
        for interpolation, padding_mode in (("bilinear", "reflection"),
                                            ("nearest", "border"))],
}
