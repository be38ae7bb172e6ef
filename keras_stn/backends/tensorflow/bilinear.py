"""The bilinear kernel of `grid_sample` on 2-D images, with its own gradient.

Written for speed on CPU, in TensorFlow's runtime, under XLA and in TFLite,
with builtin ops only:

- the image is padded with zeros (`MARGIN` pixels before, one more after,
  on each spatial axis), so with pixel coordinates kept within
  [-MARGIN, size - 1 + MARGIN] every corner index is in range without
  clamping, and corners outside the image read zero without masks (PyTorch
  skips them: the same values and gradients);
- fractions within a few ulps of 0 or 1 snap onto it, so identity,
  integer-shift and quarter-turn warps are exact at any size (this
  arithmetic is `keras_stn.kernels.bilinear`, shared with JAX's kernel);
- the gradient is written by hand (`tf.custom_gradient`): the image gradient
  is a scatter-add of the four corners (in TF's runtime one
  `unsorted_segment_sum` per corner, summed; under XLA one over all four,
  or for images with few channels one 4-corner slice per sample, as XLA's
  scatter costs per index); the coordinate gradient reuses the corner
  values gathered by the forward pass.
"""

import tensorflow as tf

from keras_stn.backends.tensorflow import ops
from keras_stn.backends.tensorflow.ops import weighted
from keras_stn.kernels import bilinear as _shared
from keras_stn.kernels.bilinear import PAD_AFTER
from keras_stn.kernels.bilinear import PAD_BEFORE

# Under XLA, at most this many channels use the 4-corner-slice scatter
# (fwd+bwd 20-50% less time on 1-3 channels; from 4 on, the flat one wins).
_QUAD_SCATTER_MAX_CHANNELS = 3
# In TF's runtime, at most this many channels scatter as scalar segments.
_SCALAR_SCATTER_MAX_CHANNELS = 16
_SAME_WIDTH_INTEGER = {tf.float32: tf.int32, tf.float64: tf.int64}


def pad_images(images):
    """Zero-pads `[batch, height, width, channels]` for `bilinear`.

    Padded as a 3-D `[batch, height, width * channels]` tensor: LiteRT runs
    a 4-D PAD as an element loop (3.4 ms on 256×28×28×1, 40× the 3-D PAD);
    zeros concatenated instead become batch-sized constants at conversion.
    """
    _, height, width, channels = images.shape.as_list()
    rows = tf.reshape(images, [-1, height, width * channels])
    rows = tf.pad(rows, [[0, 0], [PAD_BEFORE, PAD_AFTER],
                         [PAD_BEFORE * channels, PAD_AFTER * channels]])
    pad = PAD_BEFORE + PAD_AFTER
    return tf.reshape(rows, [-1, height + pad, width + pad, channels])


def bilinear(padded, x, y, height, width, target):
    """Bilinear samples of zero-padded images at pixel coordinates.

    Args:
        padded: `[batch, height + PAD_BEFORE + PAD_AFTER, width + …,
            channels]` from `pad_images`.
        x, y: `[batch, out_height, out_width]` pixel coordinates of the
            unpadded image (0 = first pixel centre), finite, within
            `MARGIN` pixels of it (`coordinates.source` keeps them so).
        height, width: static size of the unpadded image.
        target: `"runtime"`, `"xla"` or `"tflite"` (`_compilation`): picks
            the gather and the scatter formulation.

    Returns:
        `[batch, out_height, out_width, channels]` in `padded`'s dtype.
    """
    padded_pixels = _shared.padded_size(height) * _shared.padded_size(width)
    channels = padded.shape[-1]
    xla = target == "xla"
    # TF's runtime runs GatherNd 10-20% faster than GatherV2 on this
    # kernel's few-channel rows; LiteRT and XLA the other way round.
    gather = _gather_nd if target == "runtime" else tf.gather
    quad_scatter = xla and channels <= _QUAD_SCATTER_MAX_CHANNELS

    @tf.custom_gradient
    def kernel(padded, x, y):
        batch = tf.shape(padded)[0]
        flat = tf.reshape(padded, [-1, channels])
        (x0, ax) = _shared.split(ops, x, width)
        (y0, ay) = _shared.split(ops, y, height)
        index = _shared.top_left_index(ops, x0, y0, batch, height, width)
        if xla:
            # XLA would fuse this coordinate arithmetic into every gather,
            # product and scatter that reads it and recompute it there per
            # element (per channel, too): stored once, the forward pass is
            # 1.3-1.5x and the backward 1.5-3x faster.
            index, ax, ay = [_materialised(t) for t in (index, ax, ay)]
        values = [gather(flat, i)
                  for i in _shared.corner_indices(index, width)]
        weights = _shared.weights(ax, ay)
        output = None
        for weight, value in zip(weights, values):
            term = weighted(weight, value)
            output = term if output is None else output + term

        def gradient(upstream):
            if quad_scatter:
                d_padded = _quad_scatter(weights, upstream, index, batch,
                                         height, width)
            else:
                d_flat = _corner_scatter(
                    [weighted(weight, upstream) for weight in weights],
                    _shared.corner_indices(index, width),
                    batch * padded_pixels, channels, xla)
                d_padded = tf.reshape(d_flat, tf.shape(padded))
            d_x, d_y = _shared.coordinate_gradient(ax, ay, [
                tf.cast(_channel_sum(value * upstream), x.dtype)
                for value in values
            ])
            return d_padded, d_x, d_y

        return output, gradient

    return kernel(padded, x, y)


def _gather_nd(flat, index):
    return tf.gather_nd(flat, tf.expand_dims(index, -1))


def _materialised(values):
    """`values`, bit for bit, stored once under XLA.

    XLA on CPU does not fuse a reduction into the ops that read its result.
    The maximum of `values` and a copy of them is `values` itself; floats are reduced as their bits (an integer of the same width)
    so that NaN, infinities and signed zeros pass unchanged, and so that XLA
    fuses the reduction with its input instead of storing the stacked input
    for a library call.
    """
    integer = _SAME_WIDTH_INTEGER.get(values.dtype)
    bits = values if integer is None else tf.bitcast(values, integer)
    # Not a maximum with a filled constant: a converter tracing this graph
    # with a static batch would fold that constant into the file.
    bits = tf.reduce_max(tf.stack([bits, bits]), axis=0)
    return bits if integer is None else tf.bitcast(bits, values.dtype)


def _channel_sum(values):
    if values.shape[-1] == 1:
        return tf.squeeze(values, -1)
    return tf.reduce_sum(values, -1)


def _corner_scatter(updates, corners, segments, channels, xla):
    """Sum of the 4 corners' updates at their flat indices.

    Under XLA, one `unsorted_segment_sum` over the concatenated corners
    (separate ones took twice as long on 256 channels). In TF's runtime,
    one per corner, added: concatenating the updates cost more than
    scattering them (the image gradient takes 19-31% less time without);
    and with 2-16 channels every value is scattered as its own scalar
    segment, which TF's kernel adds faster than short rows (2-34% less
    time; from 64 channels on, 20% more).

    Returns:
        `[segments, channels]`, or `[segments * channels]` flat.
    """
    if xla:
        return tf.math.unsorted_segment_sum(
            tf.concat(updates, 0), tf.concat(corners, 0), segments)
    if 1 < channels <= _SCALAR_SCATTER_MAX_CHANNELS:
        lanes = tf.range(channels)
        return tf.add_n([
            tf.math.unsorted_segment_sum(
                tf.reshape(update, [-1]),
                tf.reshape(tf.expand_dims(corner * channels, -1) + lanes,
                           [-1]),
                segments * channels)
            for update, corner in zip(updates, corners)
        ])
    return tf.add_n([
        tf.math.unsorted_segment_sum(update, corner, segments)
        for update, corner in zip(updates, corners)
    ])


def _quad_scatter(weights, upstream, top_left, batch, height, width):
    """Image gradient from one scatter of 4-corner slices (XLA).

    `top_left` is each sample's top-left corner as a flat index of the
    padded batch; sample i adds a [2, 2] block there: its 4 weights times
    its upstream gradient. Formed as one broadcast product rather than by
    concatenating the 4 corners' `[.., channels]` products, which XLA
    emits as a slow per-element select (fwd+bwd 28% less time on
    224x224x3).
    """
    padded_height = _shared.padded_size(height)
    padded_width = _shared.padded_size(width)
    channels = upstream.shape[-1]
    stacked = tf.cast(tf.stack(weights, -1), upstream.dtype)
    updates = tf.expand_dims(stacked, -1) * tf.expand_dims(upstream, -2)
    updates = tf.reshape(
        updates, tf.concat([tf.shape(upstream)[:-1], [4 * channels]], 0))
    block = tf.math.unsorted_segment_sum(
        updates, top_left, batch * padded_height * padded_width)
    block = tf.reshape(
        block, [batch, padded_height, padded_width, 4, channels])
    top_left, top_right, bottom_left, bottom_right = tf.unstack(block, axis=3)
    # Pixel (i, j) of the padded image is the top-left corner of block
    # (i, j), the top-right of (i, j - 1), and so on.
    def shifted(part, down, right):
        return tf.pad(part[:, : padded_height - down, : padded_width - right],
                      [[0, 0], [down, 0], [right, 0], [0, 0]])

    return (top_left + shifted(top_right, 0, 1) + shifted(bottom_left, 1, 0)
            + shifted(bottom_right, 1, 1))
