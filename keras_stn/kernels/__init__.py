"""The numerics of every backend, written once against an op namespace.

Each function takes the namespace as its first argument, `ops`, and never
imports a framework: `keras_stn.backends.keras_ops` runs it in `keras.ops`
(JAX, and PyTorch where `F.grid_sample` does not apply),
`keras_stn.backends.tensorflow.ops` in TFLite-builtin TF ops (TF tensors, under
any Keras backend). A namespace provides:

- elementwise: `floor`, `abs`, `maximum`, `minimum`, `clip`, `where` (scalar
  branches allowed), `equal`, `logical_and`, `stop_gradient`, `cast`,
  `dtype` (the name, `"float32"`), plus Python's arithmetic and comparison
  operators on its tensors;
- shapes: `shape` (static ints, run-time scalars where unknown),
  `reshape`, `expand_dims`, `stack`, `concatenate`, `ones_like`, `zeros`,
  `constant` (a NumPy array as a tensor), `size_as` (an axis size as a
  float for coordinate arithmetic);
- the reads and products: `arange` (int32), `take` (rows of a 2-D tensor
  at int32 indices), `matmul`, `meshgrid_rows` (each row of θ times every
  meshgrid point), `weighted` (a per-pixel weight times `[.., channels]`);
- where formulations differ by framework: `round_half_to_even`,
  `zero_coordinate_gradient` (values piecewise constant in the coordinates
  get a zero gradient, not none), `fused_unnormalize` (a multiply-add
  rounded once, as a compiler fuses it).

Modules: `coordinates` (normalised to padded pixel coordinates, PyTorch's
derivatives at the kinks), `sampler` (gather-based nearest, bi-/trilinear
and bicubic interpolation of any rank) and `grids` (θ times the meshgrid).
"""
