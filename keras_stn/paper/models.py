"""The paper's distorted-MNIST models: the CNN baseline and the ST-CNN.

Jaderberg et al. (2015), section 4.1 and appendix A: the baseline CNN has two
convolutional layers (9×9 then 7×7), each followed by ReLU and 2×2 max
pooling, and a classifier; the ST-CNN puts a spatial transformer, whose
localisation net is a small CNN (two 5×5 convolutions of 20 filters with max
pooling, a 50-unit layer), before the same CNN. For 42×42 and 60×60 inputs the
transformer outputs a smaller canvas, downsampling as it attends.
"""

import keras

from keras_stn.initializers import localization_head
from keras_stn.transforms import check_scale
from keras_stn.spatial_transformer import SpatialTransformer


def check_fraction(name, value):
    """Raises a `ValueError` naming `name` unless `value` is a number in
    [0, 1) (a dropout rate, a weight decay)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            not 0.0 <= value < 1.0):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a number in "
            f"[0, 1). Received: {name}={value!r}")


def paper_cnn_layers(filters=(32, 64), num_classes=10, dropout=0.0):
    """The baseline's layers, without an input: conv 9×9 → pool → conv 7×7
    → pool → (dropout) → dense."""
    check_fraction("dropout", dropout)
    return [
        keras.layers.Conv2D(filters[0], 9, activation="relu", name="conv_9x9"),
        keras.layers.MaxPooling2D(2, name="pool_1"),
        keras.layers.Conv2D(filters[1], 7, activation="relu", name="conv_7x7"),
        keras.layers.MaxPooling2D(2, name="pool_2"),
        keras.layers.Flatten(name="flatten"),
    ] + ([keras.layers.Dropout(dropout, name="dropout")] if dropout else []) + [
        keras.layers.Dense(num_classes, name="logits"),
    ]


def paper_cnn(input_shape, filters=(32, 64), num_classes=10, dropout=0.0,
              name="cnn"):
    """The paper's CNN baseline.

    Args:
        input_shape: `(height, width, channels)`.
        filters: filters of the 9×9 and 7×7 convolutions.
        num_classes: outputs (logits).
        dropout: rate of a dropout layer before the logits (0: none; the
            paper does not say it used one).
        name: model name.

    Returns:
        A `keras.Sequential` model returning logits.

    Example:

    >>> keras_stn.paper.models.paper_cnn((28, 28, 1)).output_shape
    (None, 10)
    """
    return keras.Sequential(
        [keras.Input(input_shape)]
        + paper_cnn_layers(filters, num_classes, dropout),
        name=name,
    )


def paper_localization_net(transform="affine", initial_scale=1.0,
                           name="localization_net"):
    """The paper's CNN localisation net, starting at the identity transform
    (or zoomed: `localization_head(scale=initial_scale)`).

    max-pool 2 → conv 5×5 (20) → max-pool 2 → conv 5×5 (20) → dense 50 →
    `localization_head(transform, scale=initial_scale)`.
    """
    return keras.Sequential([
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(20, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(20, 5, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(50, activation="relu"),
        localization_head(transform, scale=initial_scale),
    ], name=name)


def paper_st_cnn(input_shape, output_size=None, transform="affine",
                 filters=(32, 64), num_classes=10, dropout=0.0,
                 initial_scale=1.0, name="st_cnn"):
    """The paper's ST-CNN: a spatial transformer before the baseline CNN.

    Args:
        input_shape: `(height, width, channels)`.
        output_size: the transformer's output `(height, width)`; `None`
            keeps the input size (the paper downsamples 42 and 60 pixel
            inputs).
        transform: the transformer's parameterisation.
        filters, num_classes, dropout: as in `paper_cnn` (the dropout is
            the classifier's; the localisation net has none).
        initial_scale: the transformer starts as a zoom showing the central
            `initial_scale` fraction of its input (`Transform.zoom`); 1 is
            the identity. Where the object is small in a large canvas (TC's
            28-pixel digit in 60 pixels), starting zoomed lets the
            classifier see it at full resolution from the first step.
        name: model name.

    Returns:
        A `keras.Sequential` model returning logits; its first layer is the
        `SpatialTransformer`.

    Example:

    >>> model = keras_stn.paper.models.paper_st_cnn((42, 42, 1), output_size=(28, 28))
    >>> model.layers[0].compute_output_shape((None, 42, 42, 1))
    (None, 28, 28, 1)
    """
    check_scale(initial_scale, "initial_scale")
    return keras.Sequential(
        [
            keras.Input(input_shape),
            SpatialTransformer(paper_localization_net(transform,
                                                      initial_scale),
                               output_size=output_size, transform=transform,
                               name="spatial_transformer"),
        ]
        + paper_cnn_layers(filters, num_classes, dropout),
        name=name,
    )


def with_transformer_output(model):
    """Rebuilds a model so that it also returns its transformer's output.

    For a `keras.Sequential` whose first layer is a `SpatialTransformer`
    (such as `paper_st_cnn`): a functional model sharing its layers and
    weights that returns `(model outputs, transformer outputs)` — to look at
    what the transformer learned, or to export both to TFLite.

    Args:
        model: the `keras.Sequential` model.

    Returns:
        A `keras.Model` with two outputs.

    Example:

    >>> model = keras_stn.paper.models.paper_st_cnn((42, 42, 1), output_size=(28, 28))
    >>> logits, warped = keras_stn.paper.models.with_transformer_output(model)(
    ...     np.zeros((2, 42, 42, 1), "float32"))
    >>> tuple(warped.shape)
    (2, 28, 28, 1)
    """
    if not isinstance(model, keras.Sequential) or not model.layers or not (
        isinstance(model.layers[0], SpatialTransformer)
    ):
        raise ValueError(
            "Invalid value for argument `model`. Expected a keras.Sequential "
            "whose first layer is a SpatialTransformer. Received: "
            f"{type(model).__name__} with layers "
            f"{[type(layer).__name__ for layer in getattr(model, 'layers', [])]}")
    inputs = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    warped = model.layers[0](inputs)
    hidden = warped
    for layer in model.layers[1:]:
        hidden = layer(hidden)
    return keras.Model(inputs, [hidden, warped])
