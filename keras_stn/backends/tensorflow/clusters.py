"""XLA clusters inside TensorFlow-runtime graphs: the default path's speed.

Keras' `fit` on a CPU, eager calls, `tf.data` maps and SavedModels run
TF's runtime, where the sampler costs one kernel launch per op; XLA fuses
the same arithmetic into a few loops. So, unless the graph being traced is
already headed for XLA or TFLite, the public ops and the layer's warp run
their arithmetic (and, through TensorFlow's function gradients, its
derivative) as one `tf.function(jit_compile=True)`: an XLA cluster inside
the runtime graph.

What bounds the compile cost: one trace per op, options and static
per-example shapes, with the batch axis left unknown; XLA then compiles
once per batch size it meets. A batch size known when the call is traced
(eager calls, graphs of a fixed batch) compiles as it is for the first
`EXACT_BATCH_SIZES` sizes a cluster meets; other batches are padded to the
next size of the form 2^k or 3·2^k (at most half as many rows again; two
compiles per doubling of the batch), and so are batches unknown until run
time (a padding of zero rows costs no copy). Per-example shapes unknown until run
time, and more than `MAX_TRACES` distinct traces in a process, keep the
runtime formulation instead of compiling without bound. So does the first
eager call of each computation and per-example shape: one-off eager calls
pay no compile, repeated ones compile on their second call (the two
formulations agree to float32 rounding, at the kinks too).

Opting out: `keras_stn.set_jit_compile(False)` or the environment variable
`KERAS_STN_JIT_COMPILE=0` (read at each call) give the runtime formulation
everywhere; `keras_stn.use_jit_compile(False)` does it in a block.
"""

import threading

import numpy as np
import tensorflow as tf

from keras_stn.core import config
from keras_stn.backends.tensorflow import compilation

MAX_TRACES = 256
EXACT_BATCH_SIZES = 8

_lock = threading.RLock()
_clusters = {}
# Clusters run compiled so far (at most MAX_TRACES); shapes met only once
# eagerly are remembered too, up to MAX_SEEN.
_compiled = [0]
MAX_SEEN = 8 * MAX_TRACES
# Every bucket size a 32-bit batch can take: 0, 1, 2, 3, 4, 6, 8, 12, ...
_BUCKETS = np.unique(np.concatenate(
    [[0, 1, 2], 2 ** np.arange(1, 31), 3 * 2 ** np.arange(0, 30),
     [2 ** 31 - 1]])).astype(np.int32)


def bucket(batch):
    """The padded batch size for `batch` examples (a Python int)."""
    return int(_BUCKETS[np.searchsorted(_BUCKETS, batch)])


def _bucket_at_run_time(batch):
    """`bucket` of an int32 tensor of batch sizes, in integer ops only
    (TFLite builtins that full-int8 quantisation leaves alone, should the
    graph be converted): the number of buckets below each size indexes the
    table of buckets."""
    batch = tf.convert_to_tensor(batch, tf.int32)
    below = tf.cast(tf.constant(_BUCKETS) < batch[..., None], tf.int32)
    return tf.gather(tf.constant(_BUCKETS), tf.reduce_sum(below, -1))


def active():
    """True where a call would run as an XLA cluster: enabled, and traced
    for TF's runtime (not inside an XLA or TFLite trace, nor for Keras'
    ONNX export, whose converter cannot take a compiled function)."""
    return (config.jit_compile_enabled() and compilation.runtime_graph()
            and not compilation.tracing_for_an_exporter_without_xla())


def run(kind, body, tensors, options=()):
    """`body(*tensors)`, as an XLA cluster where `active()`.

    Args:
        kind: a name for the computation (part of the cache key).
        body: the TF computation, a function of `tensors` returning a
            tensor or a list of tensors, each with the batch as its first
            axis; it must depend on
            nothing but its arguments and `options` (hashable, part of the
            cache key).
        tensors: TF tensors whose first axis is the batch, of one size
            (checked by the caller).
        options: hashable values `body` depends on.

    Returns:
        What `body` returns.
    """
    if not active() or any(None in t.shape[1:] for t in tensors):
        return body(*tensors)
    cluster = _cluster(kind, body, tensors, options)
    if cluster is None or not cluster.worth_compiling():
        return body(*tensors)
    static = tensors[0].shape[0]
    if static is not None:
        padding = bucket(static) - static
        if padding == 0 or _exact(cluster, static):
            return cluster(tensors)
        batch = tf.constant(static)
        padding = tf.constant(padding)
    else:
        batch = tf.shape(tensors[0])[0]
        padding = _bucket_at_run_time(batch) - batch
    padded = [tf.pad(t, tf.concat([[[0, padding]],
                                   tf.zeros([t.shape.rank - 1, 2],
                                            tf.int32)], 0))
              for t in tensors]
    outputs = cluster(padded)
    if isinstance(outputs, (list, tuple)):
        return [output[:batch] for output in outputs]
    return outputs[:batch]


class _Cluster:
    """One computation compiled for one set of per-example shapes: the
    forward pass, and one compiled vector-Jacobian product per input.

    The gradient goes through `tf.custom_gradient` rather than TF's
    gradient of a function call: that would make the forward cluster
    output every intermediate its backward reads (indices, weights,
    gathered corners), and compute every input's gradient in one call.
    Here the forward returns its result only, and each input's product
    recomputes the cheap coordinate arithmetic itself; a graph that needs
    no gradient for the images (a transformer on a model's input) prunes
    their scatter away.
    """

    def __init__(self, body, tensors):
        self.body = body
        self.signature = [tf.TensorSpec([None, *t.shape[1:]], t.dtype)
                          for t in tensors]
        self.forward = tf.function(body, input_signature=self.signature,
                                   jit_compile=True, autograph=False)
        self.exact_batch_sizes = set()
        self.compiled = False
        self._eager_calls = 0
        self._products = {}

    def worth_compiling(self):
        """False for the first eager call of these shapes, True after it
        and in every graph: a one-off eager call (a notebook cell, a test)
        costs no compile; a loop, a `tf.function`, `fit`, `predict` or a
        `tf.data` map runs compiled."""
        with _lock:
            if tf.executing_eagerly() and not self.compiled:
                self._eager_calls += 1
                if self._eager_calls < 2:
                    return False
            if not self.compiled:
                if _compiled[0] >= MAX_TRACES:
                    return False
                _compiled[0] += 1
                self.compiled = True
        return True

    @tf.autograph.experimental.do_not_convert
    def __call__(self, tensors):
        @tf.custom_gradient
        def call(*tensors):
            def gradient(*upstream):
                wanted = tuple(index for index, tensor in enumerate(tensors)
                               if tensor.dtype.is_floating)
                if tf.executing_eagerly():
                    # Eager code runs every gradient asked for: one
                    # compiled product for them all.
                    products = [self._product(wanted)]
                else:
                    # A graph prunes the products nobody reads.
                    products = [self._product((index,)) for index in wanted]
                arguments = [*tensors, *upstream]
                grads = dict(zip(wanted, [grad for product in products
                                          for grad in product(*arguments)]))
                return [grads.get(index) for index in range(len(tensors))]

            return self.forward(*tensors), gradient

        return call(*tensors)

    def _product(self, indices):
        product = self._products.get(indices)
        if product is None:
            with _lock:
                product = self._products.get(indices)
                if product is None:
                    product = self._products[indices] = self._new_product(
                        indices)
        return product

    def _new_product(self, indices):
        """The compiled vector-Jacobian product for the inputs `indices`:
        a function of the inputs and the upstream gradients, returning one
        gradient per index."""
        outputs = tf.nest.flatten(
            self.forward.get_concrete_function().structured_outputs)
        upstream = [tf.TensorSpec([None, *output.shape[1:]], output.dtype)
                    for output in outputs]
        count = len(self.signature)

        def product(*arguments):
            tensors, upstream = list(arguments[:count]), arguments[count:]
            with tf.GradientTape() as tape:
                for index in indices:
                    tape.watch(tensors[index])
                values = tf.nest.flatten(self.body(*tensors))
            return tape.gradient(values, [tensors[i] for i in indices],
                                 output_gradients=list(upstream),
                                 unconnected_gradients="zero")

        return tf.function(product,
                           input_signature=[*self.signature, *upstream],
                           jit_compile=True, autograph=False)


def _exact(cluster, batch):
    """Whether `cluster` runs `batch` rows as they are (see the module)."""
    sizes = cluster.exact_batch_sizes
    if batch in sizes:
        return True
    with _lock:
        if len(sizes) < EXACT_BATCH_SIZES:
            sizes.add(batch)
            return True
    return batch in sizes


def _cluster(kind, body, tensors, options):
    key = (kind, options, tuple((t.dtype, tuple(t.shape[1:]))
                                for t in tensors))
    cluster = _clusters.get(key)
    if cluster is not None or len(_clusters) >= MAX_SEEN:
        return cluster
    with _lock:
        if key not in _clusters and len(_clusters) < MAX_SEEN:
            _clusters[key] = _Cluster(body, tensors)
        return _clusters.get(key)


def traces():
    """How many distinct clusters this process has run compiled (for
    tests)."""
    return _compiled[0]
