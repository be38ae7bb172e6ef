"""Values and vector-Jacobian products on each Keras backend, as NumPy."""

import keras
import numpy as np


def backend_vjp(function, arrays, cotangent):
    """`(value, gradients)` of `function` on the Keras backend's tensors."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        value, vjp = jax.vjp(function, *[jnp.asarray(a) for a in arrays])
        grads = vjp(jnp.asarray(cotangent, value.dtype))
        return np.asarray(value), [np.asarray(g) for g in grads]
    if backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
        value = function(*tensors)
        value.backward(torch.tensor(cotangent, dtype=value.dtype))
        grads = [t.grad if t.grad is not None else torch.zeros_like(t)
                 for t in tensors]
        return (value.detach().numpy(),
                [g.detach().numpy() for g in grads])
    return tensorflow_vjp(function, arrays, cotangent)


def tensorflow_vjp(function, arrays, cotangent, jit_compile=None,
                   graph=False):
    """The same on TensorFlow tensors: keras_stn's TensorFlow path, eager;
    in a plain `tf.function` with `graph=True` (TF's default path: the
    warp as XLA clusters); all under XLA with `jit_compile=True`."""
    import tensorflow as tf

    def run(*tensors):
        with tf.GradientTape() as tape:
            for tensor in tensors:
                tape.watch(tensor)
            value = function(*tensors)
        grads = tape.gradient(
            value, list(tensors),
            output_gradients=tf.constant(cotangent, value.dtype))
        return value, grads

    if jit_compile or graph:
        run = tf.function(run, jit_compile=bool(jit_compile))
    value, grads = run(*[tf.constant(a) for a in arrays])
    grads = [np.zeros(a.shape, a.dtype) if g is None else g.numpy()
             for g, a in zip(grads, arrays)]
    return value.numpy(), grads
