"""Name scopes of the layer's coordinate path.

The TensorFlow backend traces the grid generator and the sampler under
these names, and int8 TFLite export keeps every op under them in float
(quantising the coordinate arithmetic moves samples by whole pixels).
"""

GRID_SCOPE = "grid_generator"
SAMPLER_SCOPE = "sampler"
# Default scopes of the public ops `affine_grid` / `affine_coordinates`
# and `grid_sample` / `sample_coordinates`.
AFFINE_GRID_SCOPE = "affine_grid"
GRID_SAMPLE_SCOPE = "grid_sample"
