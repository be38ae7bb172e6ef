"""Finite differences of a sampled function along one axis, written once
for the dense fields (Jacobians, bending energy) and the antialiased
sampler (a grid's footprint)."""


def along(values, axis, start, stop):
    """`values[..., start:stop, ...]` on `axis`."""
    index = [slice(None)] * len(values.shape)
    index[axis] = slice(start, stop)
    return values[tuple(index)]


def derivative(ops, values, axis):
    """d values / d index along `axis` (static length): central differences
    inside, one-sided at the two ends, zero along a one-pixel axis (NumPy's
    `np.gradient` with `edge_order=1`)."""
    size = values.shape[axis]
    if size == 1:
        return ops.zeros_like(values)

    def part(start, stop):
        return along(values, axis, start, stop)

    first = part(1, 2) - part(0, 1)
    last = part(size - 1, size) - part(size - 2, size - 1)
    if size == 2:
        return ops.concatenate([first, last], axis=axis)
    inside = (part(2, size) - part(0, size - 2)) * 0.5
    return ops.concatenate([first, inside, last], axis=axis)
