"""Callbacks for watching a spatial transformer learn."""

import keras
import numpy as np
import tensorflow as tf

from keras_stn.spatial_transformer import SpatialTransformer


class TransformerSnapshots(keras.callbacks.Callback):
    """Writes what a `SpatialTransformer` does to TensorBoard, every epoch.

    At each epoch end it runs the model's first `SpatialTransformer` (or the
    one given) on fixed inputs and writes an image summary: each input beside
    the transformer's output (resized to the input's height), and scalar
    summaries of θ over those inputs: the mean and standard deviation of each
    parameter and the mean distance from the identity θ. Use held-out inputs,
    not training ones.

    Args:
        inputs: array `[n, height, width, channels]` of model inputs
            (`channels_last`; at most `max_images` are shown).
        log_dir: TensorBoard folder; summaries go to `log_dir/transformer`.
        layer: the `SpatialTransformer` to watch, or `None` for the model's
            first one.
        max_images: how many inputs the image summary shows.

    Example:

    ```python
    snapshots = keras_stn.callbacks.TransformerSnapshots(
        validation_images[:16], log_dir="logs")
    model.fit(train, epochs=10, callbacks=[snapshots])
    # tensorboard --logdir logs
    ```
    """

    def __init__(self, inputs, log_dir, layer=None, max_images=16):
        super().__init__()
        inputs = np.asarray(inputs, np.float32)
        if inputs.ndim != 4:
            raise ValueError(
                "Invalid value for argument `inputs`. Expected images "
                "[n, height, width, channels]. Received: shape "
                f"{inputs.shape}")
        if layer is not None and not isinstance(layer, SpatialTransformer):
            raise TypeError(
                "Invalid value for argument `layer`. Expected a "
                "keras_stn.SpatialTransformer or None. Received: "
                f"{type(layer).__name__}")
        try:  # tf.summary's image and scalar ops live in TensorBoard.
            import tensorboard  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "TransformerSnapshots writes TensorBoard summaries: pip "
                "install tensorboard (or 'keras-stn[examples]').") from error
        self.inputs = inputs[:max_images]
        self.log_dir = log_dir
        self.layer = layer
        self._writer = None
        self._probe = None

    def _transformer(self):
        if self.layer is not None:
            return self.layer
        for sublayer in self.model._flatten_layers():  # noqa: SLF001
            if isinstance(sublayer, SpatialTransformer):
                return sublayer
        raise ValueError(
            "TransformerSnapshots found no SpatialTransformer in the model; "
            "pass it as `layer=`.")

    def on_train_begin(self, logs=None):
        layer = self._transformer()
        if layer.data_format != "channels_last":
            raise ValueError(
                "TransformerSnapshots shows channels_last transformers only. "
                f"Received: data_format={layer.data_format!r}")
        # The transformer's input as the model computes it.
        inputs = self.model.inputs
        self._probe = keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                                  layer.input)
        self._layer = layer
        self._writer = tf.summary.create_file_writer(
            f"{self.log_dir}/transformer")

    def on_epoch_end(self, epoch, logs=None):
        layer = self._layer
        layer_inputs = self._probe(self.inputs, training=False)
        theta = layer.localization_net(layer_inputs, training=False)
        transform = layer._transform_for(len(layer_inputs.shape))  # noqa: SLF001
        # NumPy from here: the callback runs on every Keras backend.
        theta = keras.ops.convert_to_numpy(theta).astype(np.float32).reshape(
            len(self.inputs), transform.num_params)
        outputs = layer(layer_inputs, training=False)
        if isinstance(outputs, (tuple, list)):
            outputs = outputs[0]
        outputs = keras.ops.convert_to_numpy(outputs)
        layer_inputs = keras.ops.convert_to_numpy(layer_inputs)
        with self._writer.as_default(step=epoch):
            tf.summary.image("inputs_and_outputs", _side_by_side(
                layer_inputs, outputs), max_outputs=len(self.inputs))
            identity = tf.constant(transform.identity, theta.dtype)
            tf.summary.scalar("theta/distance_from_identity", tf.reduce_mean(
                tf.norm(theta - identity, axis=-1)))
            mean, variance = tf.nn.moments(theta, axes=[0])
            for index in range(transform.num_params):
                tf.summary.scalar(f"theta/mean_{index}", mean[index])
                tf.summary.scalar(f"theta/std_{index}",
                                  tf.sqrt(variance[index]))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


def _side_by_side(inputs, outputs):
    """Each input beside its output, scaled to [0, 1] per image."""
    height = inputs.shape[1]
    width = int(round(outputs.shape[2] * height / outputs.shape[1]))
    outputs = tf.image.resize(tf.cast(outputs, tf.float32), (height, width),
                              method="nearest")
    pair = tf.concat([tf.cast(inputs, tf.float32), outputs], axis=2)
    if pair.shape[-1] not in (1, 3, 4):
        pair = pair[..., :1]
    low = tf.reduce_min(pair, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(pair, axis=[1, 2, 3], keepdims=True)
    return (pair - low) / tf.maximum(high - low, 1e-6)
