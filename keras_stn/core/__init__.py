"""Backend-free pieces shared by every backend's numerics.

Nothing here imports TensorFlow, JAX or PyTorch: the meshgrid (NumPy, bit
for bit PyTorch's), the bounds that keep hostile coordinates finite, the
snap tolerance and the cubic-convolution weights (`coordinates`), and the
argument checks of the public ops (`checks`). The backends build on it;
it imports none of them.
"""
