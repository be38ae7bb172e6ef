"""MNIST through tensorflow-datasets, online or offline from the IDX files.

Offline, point `mnist_dir` (or the environment variable
`KERAS_STN_MNIST_DIR`) at a folder holding the four original MNIST files
(`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`): it is passed to
tfds as its manual download folder, tfds checks the files' checksums and
never goes online. Online users need neither.
"""

import functools
import gzip
import os
import zlib

import numpy as np
import tensorflow as tf

from keras_stn import sampling
from keras_stn._files import file_lock
from keras_stn import transforms as transforms_lib
from keras_stn.grid import affine_grid

MNIST_DIR_ENV = "KERAS_STN_MNIST_DIR"
DATA_DIR_ENV = "KERAS_STN_DATA_DIR"
_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# "fit" and "validation" split MNIST's training set: the first 55,000
# digits to train on, the last 5,000 held out (never the test set).
_SPLITS = ("train", "test", "fit", "validation")
_TFDS_SPLITS = {"train": "train", "test": "test", "fit": "train[:55000]",
                "validation": "train[55000:]"}


def resolve_mnist_dir(mnist_dir=None):
    """`mnist_dir`, else `$KERAS_STN_MNIST_DIR`, else None (download).

    Raises:
        ValueError: if the folder given lacks one of the four IDX files.
    """
    mnist_dir = mnist_dir or os.environ.get(MNIST_DIR_ENV) or None
    if mnist_dir is None:
        return None
    missing = [
        name
        for name in _MNIST_FILES
        if not os.path.exists(os.path.join(mnist_dir, name))
    ]
    if missing:
        raise ValueError(
            "Invalid value for argument `mnist_dir` (or $"
            f"{MNIST_DIR_ENV}). Expected a folder holding the four original "
            f"MNIST IDX files {_MNIST_FILES}. Received: "
            f"mnist_dir={mnist_dir!r}, which lacks {missing}"
        )
    for name in _MNIST_FILES:
        _check_idx_file(os.path.join(mnist_dir, name))
    return str(mnist_dir)


@functools.lru_cache(maxsize=16)
def _checked_idx(path, size, mtime):
    """None if `path` is a whole gzip IDX file, else what is wrong."""
    del size, mtime  # the cache key: a changed file is checked again
    try:
        with gzip.open(path, "rb") as file:
            data = file.read()  # the gzip CRC catches truncation
    except (OSError, EOFError, zlib.error) as error:
        return f"not a whole gzip file ({type(error).__name__}: {error})"
    if len(data) < 4 or data[2] != 0x08 or data[3] not in (1, 3):
        return "not an MNIST IDX file (wrong magic number)"
    return None


def _check_idx_file(path):
    status = os.stat(path)
    problem = _checked_idx(path, status.st_size, status.st_mtime)
    if problem:
        raise ValueError(
            f"Invalid MNIST file {path!r}: {problem}. Expected one of the "
            "four original IDX .gz files (re-download or copy it again).")


def default_data_dir(data_dir=None):
    """The folder tfds keeps the prepared MNIST in: `data_dir`, else
    `$KERAS_STN_DATA_DIR`, else tfds' own default (`$TFDS_DATA_DIR`, else
    `~/tensorflow_datasets`)."""
    return (data_dir or os.environ.get(DATA_DIR_ENV)
            or os.environ.get("TFDS_DATA_DIR")
            or os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))


def prepare_mnist(mnist_dir=None, data_dir=None):
    """Prepares tfds' MNIST in `data_dir` once, safely when several
    processes start at once.

    tfds writes a split's files under temporary names and renames them
    when done, and two processes preparing one folder at once break each
    other's renames ("Failed to finalize writing of split"): a file lock in
    `data_dir` makes them take turns, and the later ones find the dataset
    prepared.

    Args:
        mnist_dir, data_dir: as in `load_mnist`.

    Returns:
        The data folder, to pass to `tfds.load(..., download=False)`.
    """
    import tensorflow_datasets as tfds

    mnist_dir = resolve_mnist_dir(mnist_dir)
    data_dir = default_data_dir(data_dir)
    with file_lock(os.path.join(data_dir, ".keras_stn_mnist.lock")):
        builder = tfds.builder("mnist", data_dir=data_dir)
        if not builder.is_prepared():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    manual_dir=mnist_dir))
    return data_dir


def load_mnist(split="train", mnist_dir=None, data_dir=None):
    """MNIST as a `tf.data.Dataset` of `(image, label)` pairs.

    Args:
        split: `"train"` (60,000 digits), `"test"` (10,000), or the
            training set split in two: `"fit"` (its first 55,000) and
            `"validation"` (its last 5,000, held out).
        mnist_dir: folder of the four original IDX files for offline use;
            defaults to `$KERAS_STN_MNIST_DIR`; `None` downloads.
        data_dir: where tfds keeps the prepared dataset; defaults to
            `$KERAS_STN_DATA_DIR`, else tfds' default (`~/tensorflow_datasets`).
            Preparing it is safe when processes start together
            (`prepare_mnist`).

    Returns:
        A dataset of float32 images `[28, 28, 1]` in [0, 1] and int64 labels,
        in tfds' stored (deterministic) order.

    Example:

    ```python
    train = keras_stn.paper.datasets.load_mnist("train", mnist_dir="data/mnist")
    ```
    """
    if split not in _SPLITS:
        raise ValueError(
            f"Invalid value for argument `split`. Expected one of {_SPLITS}. "
            f"Received: split={split!r}"
        )
    # Imported here: tfds is heavy and only the data pipelines need it.
    import tensorflow_datasets as tfds

    data_dir = prepare_mnist(mnist_dir, data_dir)
    dataset = tfds.load(
        "mnist",
        split=_TFDS_SPLITS[split],
        as_supervised=True,
        shuffle_files=False,
        data_dir=data_dir,
        download=False,
    )

    def to_float(image, label):
        return tf.cast(image, tf.float32) / 255.0, label

    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)


@functools.lru_cache(maxsize=8)
def _mnist_arrays(split, mnist_dir, data_dir):
    import tensorflow_datasets as tfds

    data_dir = prepare_mnist(mnist_dir, data_dir)
    dataset = tfds.load(
        "mnist", split=_TFDS_SPLITS[split], as_supervised=True,
        shuffle_files=False, data_dir=data_dir, batch_size=-1,
        download=False)
    images, labels = tfds.as_numpy(dataset)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def mnist_arrays(split="train", mnist_dir=None, data_dir=None):
    """One MNIST split in memory, in `load_mnist`'s order.

    Args:
        split, mnist_dir, data_dir: as in `load_mnist`.

    Returns:
        `(images, labels)`: read-only NumPy arrays, uint8 `[N, 28, 28, 1]`
        and int64 `[N]` (loaded once per process and split).
    """
    if split not in _SPLITS:
        raise ValueError(
            f"Invalid value for argument `split`. Expected one of {_SPLITS}. "
            f"Received: split={split!r}"
        )
    return _mnist_arrays(split, mnist_dir, data_dir)


# -- The paper's distortions (Jaderberg et al. 2015, section 4.1, appendix A) --
#
# Everything is batched: the parameters of a whole batch come from one
# counter-based hash of (stream seed, position, draw), and the batch is
# warped by one grid_sample call. Each example is still a pure function of
# (seed, split, its position in the stream), whatever the batch size.

DISTORTIONS = ("R", "RTS", "P", "E", "TC")
CANVAS_SIZES = {"R": 28, "RTS": 42, "P": 28, "E": 28, "TC": 60}
# The recipes' numbers (pixels and radians); README "Distortions" states them.
RECIPES = {
    "R": {"angle": (-np.pi / 2, np.pi / 2)},
    "RTS": {"angle": (-np.pi / 4, np.pi / 4), "scale": (0.7, 1.2)},
    "P": {"scale": (0.75, 1.0), "corner_noise_std": 5.0},
    "E": {"scale": (0.75, 1.0), "control_noise_std": 1.5,
          "control_points": 4},
    "TC": {"clutter_patches": 6, "clutter_patch": 6,
           "clutter_min_ink": 0.5},
}
_DIGIT = 28
_TC_PATCHES = RECIPES["TC"]["clutter_patches"]
_TC_PATCH = RECIPES["TC"]["clutter_patch"]
_TC_MIN_INK = RECIPES["TC"]["clutter_min_ink"]
# Draw indices of the hash: one per random quantity, never reused.
_DRAWS = {"angle": 0, "scale": 1, "placement": 2, "corner_noise": 3,
          "control_noise": 4, "clutter_choice": 5, "clutter_position": 6}
_GOLDEN = 0x9E3779B97F4A7C15


def _check_distortion(distortion):
    if distortion not in DISTORTIONS:
        raise ValueError(
            "Invalid value for argument `distortion`. Expected one of "
            f"{DISTORTIONS}. Received: distortion={distortion!r}"
        )


def _mix(value):
    """SplitMix64's finaliser: a bijective scramble of uint64 words."""
    def shift_xor(word, bits):
        return tf.bitwise.bitwise_xor(
            word, tf.bitwise.right_shift(word, tf.constant(bits, tf.uint64)))

    value = shift_xor(value, 30) * tf.constant(0xBF58476D1CE4E5B9, tf.uint64)
    value = shift_xor(value, 27) * tf.constant(0x94D049BB133111EB, tf.uint64)
    return shift_xor(value, 31)


def _uniform(seed, positions, draw, shape):
    """U[0, 1) float32 `[batch, *shape]`, a pure function of each position."""
    golden = tf.constant(_GOLDEN, tf.uint64)
    seed_key = _mix(tf.cast(seed, tf.uint64) + golden)
    keys = _mix(seed_key + tf.cast(positions, tf.uint64) * golden)
    keys = _mix(keys + tf.constant(_DRAWS[draw] + 1, tf.uint64) * golden)
    count = int(np.prod(shape, dtype=np.int64))
    counters = tf.cast(tf.range(1, count + 1, dtype=tf.int64), tf.uint64) * golden
    words = _mix(keys[:, None] + counters[None, :])
    # The top 24 bits: exact in float32, strictly below 1.
    values = tf.cast(tf.bitwise.right_shift(words, tf.constant(40, tf.uint64)),
                     tf.float32) * (2.0 ** -24)
    return tf.reshape(values, [-1] + list(shape))


def _batch_invariant(function, values):
    """`function(values)` elementwise, each value computed the same way
    whatever the batch size.

    Eigen's vectorised sin/cos/log can differ by an ulp from its scalar
    code, which only serves the tail of a tensor that is not a whole
    number of SIMD packets; padded to a multiple of 64 values, every value
    takes the vectorised path.
    """
    flat = tf.reshape(values, [-1])
    count = tf.size(flat)
    padded = tf.pad(flat, [[0, (-count) % 64]])
    return tf.reshape(function(padded)[:count], tf.shape(values))


def _range(seed, positions, draw, low, high, shape=()):
    return low + (high - low) * _uniform(seed, positions, draw, shape)


def _normal(seed, positions, draw, stddev, shape):
    """N(0, stddev²) by Box–Muller from two uniforms per value."""
    both = _uniform(seed, positions, draw, (2,) + tuple(shape))
    radius = tf.sqrt(-2.0 * _batch_invariant(tf.math.log, 1.0 - both[:, 0]))
    return stddev * radius * _batch_invariant(tf.cos, 2.0 * np.pi * both[:, 1])


def sample_distortions(distortion, seed, positions):
    """Random parameters of a batch of distortions.

    Each example's parameters are a pure function of `(seed, position)`
    (a counter-based hash: SplitMix64), so they do not depend on the batch
    an example falls in.

    Args:
        distortion: one of `DISTORTIONS`.
        seed: int, the stream's seed.
        positions: int64 `[batch]`, the examples' positions in the stream.

    Returns:
        A dict of float32 tensors, the ones the distortion uses: `angle`
        (radians, `[batch]`), `scale` (`[batch]`), `placement` (`[batch, 2]`
        in [0, 1): where in its allowed range the digit goes, x then y),
        `corner_noise` (pixels, `[batch, 4, 2]`), `control_noise` (pixels,
        `[batch, 16, 2]`), `clutter_choice` (in [0, 1), `[batch, 6]`:
        which of its digit's inked patches each 6×6 clutter patch is, see
        `clutter_sources`), `clutter_position` (its top-left corner in the
        canvas, `[batch, 6, 2]`).

    Example:

    >>> params = keras_stn.paper.datasets.sample_distortions(
    ...     "RTS", 0, tf.range(4, dtype=tf.int64))
    >>> sorted(params), tuple(params["placement"].shape)
    (['angle', 'placement', 'scale'], (4, 2))
    """
    _check_distortion(distortion)
    positions = tf.convert_to_tensor(positions, tf.int64)
    recipe = RECIPES[distortion]
    params = {}
    if "angle" in recipe:
        params["angle"] = _range(seed, positions, "angle", *recipe["angle"])
    if "scale" in recipe:
        params["scale"] = _range(seed, positions, "scale", *recipe["scale"])
    if distortion in ("RTS", "TC"):
        params["placement"] = _uniform(seed, positions, "placement", (2,))
    if distortion == "P":
        params["corner_noise"] = _normal(
            seed, positions, "corner_noise", recipe["corner_noise_std"], (4, 2))
    if distortion == "E":
        count = recipe["control_points"] ** 2
        params["control_noise"] = _normal(
            seed, positions, "control_noise", recipe["control_noise_std"],
            (count, 2))
    if distortion == "TC":
        patches = (_TC_PATCHES, 2)
        params["clutter_choice"] = _uniform(seed, positions, "clutter_choice",
                                            (_TC_PATCHES,))
        params["clutter_position"] = tf.floor(_range(
            seed, positions, "clutter_position", 0.0,
            CANVAS_SIZES["TC"] - _TC_PATCH + 1.0, patches))
    return params


def _rotations(angles):
    cos = _batch_invariant(tf.cos, angles)
    sin = _batch_invariant(tf.sin, angles)
    return tf.reshape(tf.stack([cos, -sin, sin, cos], axis=-1), [-1, 2, 2])


def placement_offsets(images, distortion, params):
    """Where RTS and TC place each digit: its centre's offset from the
    canvas centre, in pixels (x, y), `[batch, 2]`.

    The digit's ink (pixels > 0), rotated and scaled, must lie inside the
    canvas (pixel centres within it); inside that range the offset is
    uniform, `placement` choosing where. TC's offsets are whole pixels, so
    its digits are not resampled. A digit whose ink cannot fit is centred.
    """
    size = CANVAS_SIZES[distortion]
    batch = tf.shape(images)[0]
    angle = params.get("angle", tf.zeros([batch]))
    scale = params.get("scale", tf.ones([batch]))
    # Digit pixel d (from the digit centre) lands at offset + scale Rᵀ d.
    rows, cols = np.mgrid[0:_DIGIT, 0:_DIGIT].astype(np.float32) - 13.5
    points = tf.constant(np.stack([cols.ravel(), rows.ravel()], -1))  # x, y
    landed = tf.einsum("pj,bji->bpi", points, _rotations(angle))
    landed = landed * scale[:, None, None]
    ink = tf.reshape(images, [batch, -1, 1]) > 0
    big = tf.constant(1e9)
    low = tf.reduce_min(tf.where(ink, landed, big), axis=1)
    high = tf.reduce_max(tf.where(ink, landed, -big), axis=1)
    half = (size - 1) / 2.0
    # Allowed offsets: [-half - low, half - high] per axis.
    first, last = -half - low, half - high
    fits = tf.logical_and(first <= last, low <= high)
    first = tf.where(fits, first, 0.0)
    last = tf.where(fits, last, 0.0)
    placement = params["placement"]
    if distortion == "TC":
        # Whole pixels: digit pixel centres (±13.5) on canvas pixel centres.
        first, last = tf.math.ceil(first - 1e-4), tf.floor(last + 1e-4)
        return tf.minimum(first + tf.floor(placement * (last - first + 1.0)),
                          last)
    return first + placement * (last - first)


def _homographies(sources, targets):
    """The 8 parameters of each H with H(sources[b, i]) = targets[b, i]."""
    x, y = sources[..., 0], sources[..., 1]
    u, v = targets[..., 0], targets[..., 1]
    zero, one = tf.zeros_like(x), tf.ones_like(x)
    rows_u = tf.stack([x, y, one, zero, zero, zero, -x * u, -y * u], -1)
    rows_v = tf.stack([zero, zero, zero, x, y, one, -x * v, -y * v], -1)
    system = tf.reshape(tf.stack([rows_u, rows_v], 2), [-1, 8, 8])
    values = tf.reshape(tf.stack([u, v], 2), [-1, 8, 1])
    return tf.reshape(tf.linalg.solve(system, values), [-1, 8])


def distortion_grids(images, distortion, params):
    """The sampling grids `[batch, S, S, 2]` that distort a batch of digits.

    Grids map canvas (output) coordinates to digit (input) coordinates,
    normalised with `align_corners=False`, as `grid_sample` reads them.
    """
    size = CANVAS_SIZES[distortion]
    half_digit = _DIGIT / 2.0
    if distortion in ("R", "RTS", "TC"):
        batch = tf.shape(images)[0]
        angle = params.get("angle", tf.zeros([batch]))
        scale = params.get("scale", tf.ones([batch]))
        if distortion == "R":
            offset = tf.zeros([batch, 2])
        else:
            offset = placement_offsets(images, distortion, params)
        # Canvas pixel u (from the canvas centre) reads digit pixel
        # R (u - offset) / scale; normalised, x = u / half-size.
        rotation = _rotations(angle)
        factor = (1.0 / (half_digit * scale))[:, None, None]
        matrix = rotation * (size / 2.0) * factor
        shift = -tf.linalg.matvec(rotation, offset)[..., None] * factor
        return affine_grid(tf.concat([matrix, shift], axis=2), (size, size))
    if distortion == "P":
        corners = tf.constant([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0],
                               [-1.0, 1.0]])
        # The digit's corners land at scale · corner + noise in the canvas;
        # H maps those canvas points back to the digit's corners.
        moved = (params["scale"][:, None, None] * corners
                 + params["corner_noise"] / half_digit)
        corners = tf.broadcast_to(corners, tf.shape(moved))
        return transforms_lib.get("projective").grid(
            _homographies(moved, corners), (size, size))
    tps = transforms_lib.get("tps")
    points = tf.reshape(tf.constant(tps.identity), [1, 16, 2])
    # The canvas's regular 4×4 control points read the digit at the
    # (scaled-out, then perturbed) positions: the digit shrinks by `scale`.
    positions = (points / params["scale"][:, None, None]
                 + params["control_noise"] / half_digit)
    return tps.grid(tf.reshape(positions, [-1, 32]), (size, size))


def clutter_sources(clutter, choice):
    """Where TC's clutter patches are cut from their digits: inked places.

    A 6×6 patch may be cut at any top-left corner whose patch holds at
    least `RECIPES["TC"]["clutter_min_ink"]` (half) of the ink of the
    digit's most inked patch; `choice` picks one of those corners
    uniformly (in row-major order, the `floor(choice × count)`-th). So
    every patch carries strokes, where a uniform corner leaves 36 % of
    the patches of MNIST's training digits with under half a pixel of
    ink. A blank digit keeps every corner.

    Args:
        clutter: float32 `[batch, 6, 28, 28, 1]`, the digits.
        choice: float32 `[batch, 6]` in [0, 1).

    Returns:
        int32 `[batch, 6, 2]`: row and column of each patch's top-left
        corner in its digit.

    Example:

    >>> digits = np.zeros((1, 6, 28, 28, 1), "float32")
    >>> digits[..., 10:12, 4:20, :] = 1.0  # a horizontal stroke
    >>> corners = keras_stn.paper.datasets.clutter_sources(
    ...     digits, tf.fill([1, 6], 0.5))
    >>> corners[0, 0].numpy().tolist()
    [8, 9]
    """
    clutter = tf.convert_to_tensor(clutter, tf.float32)
    choice = tf.convert_to_tensor(choice, tf.float32)
    corners = _DIGIT - _TC_PATCH + 1
    # Ink of every patch: [batch × 6, 23, 23].
    ink = tf.nn.avg_pool2d(tf.reshape(clutter, [-1, _DIGIT, _DIGIT, 1]),
                           _TC_PATCH, 1, "VALID")
    ink = tf.reshape(ink, [tf.shape(choice)[0], _TC_PATCHES, corners ** 2])
    richest = tf.reduce_max(ink, axis=-1, keepdims=True)
    allowed = tf.cast(ink >= _TC_MIN_INK * richest, tf.int32)
    counts = tf.cumsum(allowed, axis=-1)
    pick = tf.minimum(tf.cast(choice * tf.cast(counts[..., -1], tf.float32),
                              tf.int32), counts[..., -1] - 1)
    # The first corner with pick + 1 allowed corners up to it.
    index = tf.argmax(tf.cast(counts > pick[..., None], tf.int32), axis=-1,
                      output_type=tf.int32)
    return tf.stack([index // corners, index % corners], axis=-1)


def _clutter(clutter, sources, positions):
    """Six 6×6 patches of other digits on an empty canvas, `[batch, S, S, 1]`.

    Overlapping patches keep the brighter pixel. Patch k of an example is
    cut at `sources[:, k]` (row, column) of its digit and pasted with its
    top-left corner at `positions[:, k]` of the canvas.
    """
    size = CANVAS_SIZES["TC"]
    sources = tf.cast(sources, tf.int32)
    positions = tf.cast(positions, tf.int32)
    batch = tf.shape(sources)[0]
    steps = tf.range(_TC_PATCH)
    # [batch, 6, 6, 6]: row and column of each patch pixel.
    rows = (sources[:, :, 0, None, None] + steps[:, None]
            + tf.zeros_like(steps)[None, :])
    cols = (sources[:, :, 1, None, None] + tf.zeros_like(steps)[:, None]
            + steps[None, :])
    values = tf.gather_nd(clutter[..., 0], tf.stack([rows, cols], -1),
                          batch_dims=2)
    items = tf.broadcast_to(tf.range(batch)[:, None, None, None],
                            tf.shape(rows))
    targets = tf.stack([items, rows - sources[:, :, :1, None]
                        + positions[:, :, :1, None],
                        cols - sources[:, :, 1:, None]
                        + positions[:, :, 1:, None]], -1)
    layer = tf.tensor_scatter_nd_max(
        tf.zeros([batch, size, size], clutter.dtype),
        tf.reshape(targets, [-1, 3]), tf.reshape(values, [-1]))
    return layer[..., None]


def apply_distortions(images, distortion, params, clutter=None):
    """Distorts a batch of digits with given parameters: one `grid_sample`.

    Warps use keras_stn's own grids and `grid_sample` (bilinear, zeros
    padding, align_corners=False).

    Args:
        images: float32 `[batch, 28, 28, 1]` in [0, 1].
        distortion: one of `DISTORTIONS`.
        params: a dict from `sample_distortions`.
        clutter: for `"TC"`, float32 `[batch, 6, 28, 28, 1]`: the digits the
            six clutter patches of each example are cut from.

    Returns:
        float32 `[batch, S, S, 1]`, S = `CANVAS_SIZES[distortion]`.
    """
    _check_distortion(distortion)
    if distortion == "TC" and clutter is None:
        raise ValueError(
            "Distortion 'TC' needs `clutter`: six [28, 28, 1] digits per "
            "example to cut the clutter patches from. Received: clutter=None"
        )
    images = tf.convert_to_tensor(images, tf.float32)
    canvas = sampling.grid_sample(
        images, distortion_grids(images, distortion, params))
    if distortion == "TC":
        clutter = tf.convert_to_tensor(clutter, tf.float32)
        canvas = tf.maximum(canvas, _clutter(
            clutter, clutter_sources(clutter, params["clutter_choice"]),
            params["clutter_position"]))
    return canvas


def stream_seed(split, seed=0):
    """The seed of `distorted_mnist(split, ..., seed=seed)`'s distortions.

    With `repeat=False` the stream's position `i` is the split's digit `i`,
    so `sample_distortions(distortion, stream_seed(split, seed), i)` gives
    the parameters that digit was distorted with.

    Example:

    >>> keras_stn.paper.datasets.stream_seed("test", seed=0)
    1
    """
    if split not in _SPLITS:
        raise ValueError(
            f"Invalid value for argument `split`. Expected one of {_SPLITS}. "
            f"Received: split={split!r}")
    return 2 * int(seed) + _SPLITS.index(split)


def distorted_mnist(split, distortion, seed=0, repeat=False, batch_size=64,
                    start=0, count=None, mnist_dir=None, data_dir=None):
    """MNIST with one of the paper's distortions, in batches.

    Every example's distortion is a pure function of `(seed, split, its
    position in the stream)`, whatever the batch size, so the test set is
    the same images for every model scored with the same seed, and a
    training stream is reproducible. With `repeat=True` the digits are
    reshuffled on every pass and redistorted (fresh distortions each
    epoch). Each batch is warped by one `grid_sample` call.

    The recipes (sizes in pixels; `RECIPES` holds the numbers):
        - `"R"`: rotation U(−90°, 90°); 28×28.
        - `"RTS"`: rotation U(−45°, 45°), scale U(0.7, 1.2), placed at a
          uniform position in a 42×42 canvas where all its ink fits.
        - `"P"`: scale U(0.75, 1), then the four corners of the 28×28
          frame moved by N(0, 5²) each (x and y); projective; 28×28.
        - `"E"`: scale U(0.75, 1), then a 4×4 grid of control points moved
          by N(0, 1.5²); thin-plate spline; 28×28.
        - `"TC"`: the digit at a uniform whole-pixel position of a 60×60
          canvas where all its ink fits, with six 6×6 patches cut from
          other digits where they have ink (`clutter_sources`), pasted at
          uniform positions (the brighter pixel wins).

    Args:
        split: `"train"`, `"test"`, `"fit"` or `"validation"` (as in
            `load_mnist`).
        distortion: one of `DISTORTIONS`.
        seed: int.
        repeat: reshuffle and repeat forever (training).
        batch_size: examples per batch (the last one may be smaller).
        start: skip the stream's first `start` examples (a resumed run).
        count: stop after this many examples (default: all, or forever).
        mnist_dir, data_dir: as in `load_mnist`.

    Returns:
        A `tf.data.Dataset` of batches: float32 `[batch, S, S, 1]` images in
        [0, 1] and int64 labels `[batch]`.
    """
    _check_distortion(distortion)
    images, labels = mnist_arrays(split, mnist_dir, data_dir)
    images = tf.constant(images)
    labels = tf.constant(labels)
    seed = stream_seed(split, seed)
    size = len(labels)

    def shuffled(stream):
        return tf.data.Dataset.range(size).shuffle(
            size, seed=stream, reshuffle_each_iteration=True).repeat()

    dataset = shuffled(seed) if repeat else tf.data.Dataset.range(size)
    dataset = dataset.enumerate()
    if distortion == "TC":
        # Clutter comes from another shuffled pass over the same split.
        others = shuffled(seed + 7919).batch(_TC_PATCHES)
        dataset = tf.data.Dataset.zip(dataset, others)
    else:
        dataset = dataset.map(lambda position, index: ((position, index), 0))
    dataset = dataset.skip(start)
    if count is not None:
        dataset = dataset.take(count)

    # XLA fuses the batch's distortion sampling, warp and clutter: 4-5x
    # faster than TF's runtime here, so the distortions cost the training
    # step little. The digits are gathered before it, in TF's runtime:
    # gathered inside, the whole split (47 MB for the training set) became
    # a constant of every compiled program.
    @tf.function(jit_compile=True)
    def distorted(digits, positions, clutter):
        params = sample_distortions(distortion, seed, positions)
        return apply_distortions(digits, distortion, params, clutter)

    def distort(positions, index, others):
        digits = tf.cast(tf.gather(images, index), tf.float32) / 255.0
        clutter = None
        if distortion == "TC":
            clutter = tf.cast(tf.gather(images, others), tf.float32) / 255.0
        return (distorted(digits, positions, clutter),
                tf.gather(labels, index))

    return dataset.batch(batch_size).map(
        lambda example, others: distort(*example, others),
        num_parallel_calls=tf.data.AUTOTUNE)
