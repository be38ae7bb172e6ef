"""An independent NumPy reference of affine_grid / grid_sample / homographies.

Written from PyTorch's documented semantics, point by point with plain Python
loops and float64 arithmetic, sharing no code with `keras_stn`: it is what
the implementation is checked against, so it must stay simple and obviously
right rather than fast.
"""

import itertools
import math

import numpy as np


def pixel_centres(num, align_corners):
    """Normalised coordinates of the centres of `num` pixels along one axis."""
    if num == 1:
        return np.array([0.0])  # the one pixel is centred on the axis

    if align_corners:
        return np.linspace(-1.0, 1.0, num)
    # Pixel k spans [-1 + 2k/num, -1 + 2(k+1)/num]; its centre is the middle.
    return np.array([-1.0 + (2 * k + 1) / num for k in range(num)])


def affine_grid(theta, height, width, align_corners):
    """`[B, H, W, 2]` float64 grid: grid[b, i, j] = theta[b] @ (x_j, y_i, 1)."""
    theta = np.asarray(theta, dtype=np.float64).reshape(-1, 2, 3)
    xs = pixel_centres(width, align_corners)
    ys = pixel_centres(height, align_corners)
    grid = np.zeros((theta.shape[0], height, width, 2))
    for b in range(theta.shape[0]):
        for i in range(height):
            for j in range(width):
                point = np.array([xs[j], ys[i], 1.0])
                grid[b, i, j] = theta[b] @ point
    return grid


def affine_theta_gradient(d_grid, height, width, align_corners):
    """`[B, 6]` float64: the gradient of a loss with respect to affine θ,
    by the chain rule from its gradient `d_grid [B, H, W, 2]` with respect
    to `affine_grid`'s output: the sum over pixels of d grid ⊗ (x, y, 1)."""
    xs = pixel_centres(width, align_corners)
    ys = pixel_centres(height, align_corners)
    points = np.stack([*np.meshgrid(xs, ys), np.ones((height, width))], -1)
    d_grid = np.asarray(d_grid, dtype=np.float64).reshape(-1, height, width, 2)
    return np.einsum("bhwk,hwj->bkj", d_grid, points).reshape(-1, 6)


def projective_grid(params, height, width, align_corners):
    """Grid of homographies given as 8 row-major parameters with h33 = 1."""
    params = np.asarray(params, dtype=np.float64).reshape(-1, 8)
    xs = pixel_centres(width, align_corners)
    ys = pixel_centres(height, align_corners)
    grid = np.zeros((params.shape[0], height, width, 2))
    for b in range(params.shape[0]):
        matrix = np.append(params[b], 1.0).reshape(3, 3)
        for i in range(height):
            for j in range(width):
                u, v, w = matrix @ np.array([xs[j], ys[i], 1.0])
                grid[b, i, j] = (u / w, v / w)
    return grid


def to_pixel(coord, size, align_corners):
    """Normalised coordinate -> pixel coordinate (pixel k is centred at k)."""
    if align_corners:
        return (coord + 1.0) / 2.0 * (size - 1)
    return ((coord + 1.0) * size - 1.0) / 2.0


def reflect(coord, low, high):
    """Mirrors `coord` at `low` and `high` until it lies between them.

    Folding one mirror at a time (not the closed form of the implementation).
    """
    if high <= low:
        return low
    span = high - low
    # Shift by whole periods (2 * span) first, so the loop is short.
    coord = low + math.fmod(coord - low, 2.0 * span)
    if coord < low:
        coord += 2.0 * span
    while coord < low or coord > high:
        if coord > high:
            coord = 2.0 * high - coord
        if coord < low:
            coord = 2.0 * low - coord
    return coord


def source_pixel(coord, size, padding_mode, align_corners):
    """Pixel coordinate to read for a normalised `coord` under `padding_mode`."""
    pixel = to_pixel(coord, size, align_corners)
    if padding_mode == "border":
        pixel = min(max(pixel, 0.0), size - 1.0)
    elif padding_mode == "reflection":
        if align_corners:
            pixel = reflect(pixel, 0.0, size - 1.0)
        else:
            pixel = reflect(pixel, -0.5, size - 0.5)
        pixel = min(max(pixel, 0.0), size - 1.0)
    return pixel


def cubic_kernel(distance, a=-0.75):
    """Keys' cubic convolution kernel W(d), the one PyTorch's bicubic uses."""
    d = abs(distance)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def _bicubic(read, point, height, width, padding_mode, align_corners):
    """Σ over the 4×4 taps around the (unpadded) point of W(dx) W(dy) value,
    each tap's coordinate padded on its own, as PyTorch's bicubic does."""
    x = to_pixel(point[0], width, align_corners)
    y = to_pixel(point[1], height, align_corners)
    left, top = math.floor(x), math.floor(y)
    total = 0.0
    for row in range(top - 1, top + 3):
        for col in range(left - 1, left + 3):
            weight = cubic_kernel(x - col) * cubic_kernel(y - row)
            tap_col = _pad_tap(col, width, padding_mode, align_corners)
            tap_row = _pad_tap(row, height, padding_mode, align_corners)
            total = total + weight * read(tap_row, tap_col)
    return total


def _pad_tap(index, size, padding_mode, align_corners):
    if padding_mode == "zeros":
        return index
    if padding_mode == "reflection":
        low, high = (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)
        index = reflect(float(index), low, high)
    return int(min(max(index, 0.0), size - 1.0))


def grid_sample(images, grid, interpolation, padding_mode, align_corners):
    """NHWC images sampled at `grid` [B, Ho, Wo, 2], as PyTorch's grid_sample."""
    images = np.asarray(images, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    batch, height, width, channels = images.shape
    out = np.zeros(grid.shape[:3] + (channels,))

    def read(b, row, col):
        if 0 <= row < height and 0 <= col < width:
            return images[b, row, col]
        return np.zeros(channels)

    for b in range(batch):
        for i in range(grid.shape[1]):
            for j in range(grid.shape[2]):
                x = source_pixel(grid[b, i, j, 0], width, padding_mode,
                                 align_corners)
                y = source_pixel(grid[b, i, j, 1], height, padding_mode,
                                 align_corners)
                if interpolation == "bicubic":
                    out[b, i, j] = _bicubic(
                        lambda row, col: read(b, row, col), grid[b, i, j],
                        height, width, padding_mode, align_corners)
                    continue
                if interpolation == "nearest":
                    # np.rint rounds half to even, like C's nearbyint.
                    out[b, i, j] = read(b, int(np.rint(y)), int(np.rint(x)))
                    continue
                left, top = math.floor(x), math.floor(y)
                fx, fy = x - left, y - top
                out[b, i, j] = (
                    (1 - fx) * (1 - fy) * read(b, top, left)
                    + fx * (1 - fy) * read(b, top, left + 1)
                    + (1 - fx) * fy * read(b, top + 1, left)
                    + fx * fy * read(b, top + 1, left + 1)
                )
    return out


def thin_plate_spline_grid(control, positions, height, width, align_corners):
    """Grid of the thin-plate spline sending `control[k]` to `positions[k]`.

    Solves the spline system for this one case with np.linalg.solve and
    evaluates f(p) = a0 + a1 x + a2 y + sum_k w_k U(|p - c_k|), U(r) = r² log r²,
    point by point.
    """
    control = np.asarray(control, np.float64)
    positions = np.asarray(positions, np.float64)
    count = len(control)

    def kernel(p, q):
        r2 = float(np.sum((p - q) ** 2))
        return 0.0 if r2 == 0.0 else r2 * math.log(r2)

    system = np.zeros((count + 3, count + 3))
    for i in range(count):
        for j in range(count):
            system[i, j] = kernel(control[i], control[j])
        system[i, count:] = [1.0, control[i, 0], control[i, 1]]
        system[count:, i] = [1.0, control[i, 0], control[i, 1]]
    rhs = np.zeros((count + 3, 2))
    rhs[:count] = positions
    coefficients = np.linalg.solve(system, rhs)
    xs = pixel_centres(width, align_corners)
    ys = pixel_centres(height, align_corners)
    grid = np.zeros((height, width, 2))
    for i in range(height):
        for j in range(width):
            point = np.array([xs[j], ys[i]])
            value = coefficients[count] + coefficients[count + 1] * point[0] \
                + coefficients[count + 2] * point[1]
            for k in range(count):
                value = value + coefficients[k] * kernel(point, control[k])
            grid[i, j] = value
    return grid


# ---------------------------------------------------------------------------
# Derivatives with PyTorch's conventions at the kinks, for 2-D and 3-D.
#
# A bilinear (trilinear) corner is floor(pixel), so at an integer pixel the
# derivative is taken on [x, x + 1]; `border` and `reflection` clip with a
# derivative of 1 strictly inside the image and 0 on or beyond its border;
# each reflection flips the sign of the derivative. Bicubic differentiates
# the cubic weights of the unpadded coordinate (its taps are padded on their
# own, and tap positions do not move with the coordinate).


def reflect_with_sign(coord, low, high):
    """`reflect(coord, low, high)` and the sign of its derivative (-1 after
    an odd number of mirrorings)."""
    if high <= low:
        return low, 0.0
    span = high - low
    coord = low + math.fmod(coord - low, 2.0 * span)
    if coord < low:
        coord += 2.0 * span
    sign = 1.0
    while coord < low or coord > high:
        if coord > high:
            coord, sign = 2.0 * high - coord, -sign
        if coord < low:
            coord, sign = 2.0 * low - coord, -sign
    return coord, sign


def source_pixel_and_slope(coord, size, padding_mode, align_corners):
    """(pixel read, d pixel / d coord) for a normalised `coord`."""
    pixel = to_pixel(coord, size, align_corners)
    slope = (size - 1) / 2.0 if align_corners else size / 2.0
    if padding_mode == "zeros":
        return pixel, slope
    if padding_mode == "reflection":
        if align_corners:
            pixel, sign = reflect_with_sign(pixel, 0.0, size - 1.0)
        else:
            pixel, sign = reflect_with_sign(pixel, -0.5, size - 0.5)
        slope *= sign
    if pixel <= 0.0:
        return 0.0, 0.0
    if pixel >= size - 1.0:
        return size - 1.0, 0.0
    return pixel, slope


def cubic_kernel_derivative(distance, a=-0.75):
    """W'(d) of `cubic_kernel` (continuous: Keys' kernel is C¹)."""
    d, sign = abs(distance), (1.0 if distance >= 0 else -1.0)
    if d <= 1:
        return sign * (3 * (a + 2) * d**2 - 2 * (a + 3) * d)
    if d < 2:
        return sign * (3 * a * d**2 - 10 * a * d + 8 * a)
    return 0.0


def sample_with_gradient(images, grid, interpolation, padding_mode,
                         align_corners):
    """Values of `grid_sample` and d value / d grid, point by point.

    Args:
        images: `[B, *spatial, C]` (2-D or 3-D spatial, z y x order).
        grid: `[B, *out, k]`, k = len(spatial), coordinates (x, y[, z]).

    Returns:
        `(values [B, *out, C], jacobian [B, *out, C, k])`.
    """
    images = np.asarray(images, np.float64)
    grid = np.asarray(grid, np.float64)
    spatial = images.shape[1:-1]
    sizes = spatial[::-1]  # x first
    rank = len(sizes)
    channels = images.shape[-1]
    values = np.zeros(grid.shape[:-1] + (channels,))
    jacobian = np.zeros(grid.shape[:-1] + (channels, rank))

    def read(b, index_xyz):
        if all(0 <= i < n for i, n in zip(index_xyz, sizes)):
            return images[(b,) + tuple(index_xyz[::-1])]
        return np.zeros(channels)

    for position in np.ndindex(*grid.shape[:-1]):
        b, point = position[0], grid[position]
        if interpolation == "bicubic":
            value, gradient = _bicubic_with_gradient(
                lambda index: read(b, index), point, sizes, padding_mode,
                align_corners)
        elif interpolation == "nearest":
            pixels = [source_pixel_and_slope(c, n, padding_mode,
                                             align_corners)[0]
                      for c, n in zip(point, sizes)]
            value = read(b, [int(np.rint(p)) for p in pixels])
            gradient = np.zeros((channels, rank))
        else:
            value, gradient = _linear_with_gradient(
                lambda index: read(b, index), point, sizes, padding_mode,
                align_corners, channels)
        values[position] = value
        jacobian[position] = gradient
    return values, jacobian


def _linear_with_gradient(read, point, sizes, padding_mode, align_corners,
                          channels):
    rank = len(sizes)
    pixels, slopes = zip(*[source_pixel_and_slope(c, n, padding_mode,
                                                  align_corners)
                           for c, n in zip(point, sizes)])
    lows = [math.floor(p) for p in pixels]
    fractions = [p - low for p, low in zip(pixels, lows)]
    value = np.zeros(channels)
    gradient = np.zeros((channels, rank))
    for corner in itertools.product((0, 1), repeat=rank):
        weights = [f if c else 1.0 - f for f, c in zip(fractions, corner)]
        sample = read([low + c for low, c in zip(lows, corner)])
        value = value + np.prod(weights) * sample
        for axis in range(rank):
            # d weight / d pixel of this axis: +1 for the high corner.
            others = np.prod([w for k, w in enumerate(weights) if k != axis])
            step = 1.0 if corner[axis] else -1.0
            gradient[:, axis] += step * others * slopes[axis] * sample
    return value, gradient


def _bicubic_with_gradient(read, point, sizes, padding_mode, align_corners):
    x = to_pixel(point[0], sizes[0], align_corners)
    y = to_pixel(point[1], sizes[1], align_corners)
    slope_x = (sizes[0] - 1) / 2.0 if align_corners else sizes[0] / 2.0
    slope_y = (sizes[1] - 1) / 2.0 if align_corners else sizes[1] / 2.0
    left, top = math.floor(x), math.floor(y)
    value, d_x, d_y = 0.0, 0.0, 0.0
    for row in range(top - 1, top + 3):
        for col in range(left - 1, left + 3):
            sample = read([_pad_tap(col, sizes[0], padding_mode,
                                    align_corners),
                           _pad_tap(row, sizes[1], padding_mode,
                                    align_corners)])
            wx, wy = cubic_kernel(x - col), cubic_kernel(y - row)
            value = value + wx * wy * sample
            d_x = d_x + cubic_kernel_derivative(x - col) * wy * sample
            d_y = d_y + wx * cubic_kernel_derivative(y - row) * sample
    return value, np.stack([d_x * slope_x, d_y * slope_y], -1)
