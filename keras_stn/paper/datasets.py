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

    mnist_dir = resolve_mnist_dir(mnist_dir)
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    download_config = tfds.download.DownloadConfig(manual_dir=mnist_dir)
    dataset = tfds.load(
        "mnist",
        split=_TFDS_SPLITS[split],
        as_supervised=True,
        shuffle_files=False,
        data_dir=data_dir,
        download_and_prepare_kwargs={"download_config": download_config},
    )

    def to_float(image, label):
        return tf.cast(image, tf.float32) / 255.0, label

    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)


# -- The paper's distortions (Jaderberg et al. 2015, section 4.1) -------------

DISTORTIONS = ("R", "RTS", "P", "E", "TC")
CANVAS_SIZES = {"R": 28, "RTS": 42, "P": 28, "E": 28, "TC": 60}
_DIGIT = 28
_TC_PATCHES = 6
_TC_PATCH = 6


def _check_distortion(distortion):
    if distortion not in DISTORTIONS:
        raise ValueError(
            "Invalid value for argument `distortion`. Expected one of "
            f"{DISTORTIONS}. Received: distortion={distortion!r}"
        )


def _rotation(angle):
    cos, sin = tf.cos(angle), tf.sin(angle)
    return tf.stack([tf.stack([cos, -sin]), tf.stack([sin, cos])])


@tf.autograph.experimental.do_not_convert
def sample_distortion(distortion, seed):
    """Random parameters of one distortion, a pure function of `seed`.

    Args:
        distortion: one of `DISTORTIONS`.
        seed: int tensor of shape `[2]` (a stateless random seed).

    Returns:
        A dict of float32 tensors: `angle` (radians), `scale`, `offset`
        (pixels, digit centre from canvas centre), `corner_noise` (pixels,
        `[4, 2]`), `control_noise` (pixels, `[16, 2]`), `clutter_source`
        (pixel rows/columns of each 6×6 patch in its digit, `[6, 2]`),
        `clutter_position` (top-left corners in the canvas, `[6, 2]`) —
        the ones the distortion uses.
    """
    _check_distortion(distortion)
    seed = tf.cast(seed, tf.int64)

    def uniform(index, shape, low, high):
        sub_seed = tf.random.experimental.stateless_fold_in(seed, index)
        return tf.random.stateless_uniform(shape, sub_seed, low, high)

    def normal(index, shape, stddev):
        sub_seed = tf.random.experimental.stateless_fold_in(seed, index)
        return tf.random.stateless_normal(shape, sub_seed, stddev=stddev)

    if distortion == "R":
        return {"angle": uniform(0, [], -np.pi / 2, np.pi / 2)}
    if distortion == "RTS":
        scale = uniform(1, [], 0.7, 1.2)
        # The scaled digit box stays inside the canvas.
        room = (CANVAS_SIZES["RTS"] - _DIGIT * scale) / 2.0
        return {
            "angle": uniform(0, [], -np.pi / 4, np.pi / 4),
            "scale": scale,
            "offset": uniform(2, [2], -1.0, 1.0) * room,
        }
    if distortion == "P":
        return {"scale": uniform(1, [], 0.75, 1.0),
                "corner_noise": normal(3, [4, 2], 5.0)}
    if distortion == "E":
        return {"scale": uniform(1, [], 0.75, 1.0),
                "control_noise": normal(4, [16, 2], 1.5)}
    room = CANVAS_SIZES["TC"] - _DIGIT
    return {
        "offset": tf.floor(uniform(2, [2], 0.0, room + 1.0)) - room / 2.0,
        "clutter_source": tf.floor(
            uniform(5, [_TC_PATCHES, 2], 0.0, _DIGIT - _TC_PATCH + 1.0)),
        "clutter_position": tf.floor(uniform(
            6, [_TC_PATCHES, 2], 0.0, CANVAS_SIZES["TC"] - _TC_PATCH + 1.0)),
    }


@tf.autograph.experimental.do_not_convert
def _homography(sources, targets):
    """The 8 parameters of H with H(sources[i]) = targets[i], 4 points."""
    rows, values = [], []
    for index in range(4):
        x, y = sources[index, 0], sources[index, 1]
        u, v = targets[index, 0], targets[index, 1]
        rows.append(tf.stack([x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u]))
        rows.append(tf.stack([0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v]))
        values += [u, v]
    solution = tf.linalg.solve(tf.stack(rows), tf.reshape(tf.stack(values), [8, 1]))
    return tf.reshape(solution, [8])


@tf.autograph.experimental.do_not_convert
def apply_distortion(image, distortion, params, clutter=None):
    """Distorts one `[28, 28, 1]` digit with given parameters.

    Warps use keras_stn's own `affine_grid` / `grid_sample` and transforms
    (bilinear, zeros padding, align_corners=False).

    Args:
        image: float32 `[28, 28, 1]` in [0, 1].
        distortion: one of `DISTORTIONS`.
        params: a dict from `sample_distortion`.
        clutter: for `"TC"`, float32 `[6, 28, 28, 1]`: the digits the six
            clutter patches are cut from.

    Returns:
        float32 `[S, S, 1]`, S = `CANVAS_SIZES[distortion]`.
    """
    _check_distortion(distortion)
    size = CANVAS_SIZES[distortion]
    half_digit = _DIGIT / 2.0
    images = tf.expand_dims(image, 0)

    if distortion in ("R", "RTS", "TC"):
        # Output pixel u (from the canvas centre) reads digit pixel
        # R (u - offset) / scale; in normalised units, x = u / half-size.
        angle = params.get("angle", tf.constant(0.0))
        scale = params.get("scale", tf.constant(1.0))
        offset = params.get("offset", tf.zeros([2]))
        rotation = _rotation(angle)
        matrix = rotation * (size / 2.0) / (half_digit * scale)
        shift = -tf.linalg.matvec(rotation, offset) / (half_digit * scale)
        theta = tf.concat([matrix, tf.expand_dims(shift, 1)], axis=1)
        grid = affine_grid(tf.expand_dims(theta, 0), (size, size))
    elif distortion == "P":
        corners = tf.constant([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
        # The digit's corners land at scale * corner + noise in the output;
        # H maps those output points back to the digit's corners.
        moved = params["scale"] * corners + params["corner_noise"] / half_digit
        homography = _homography(moved, corners)
        grid = transforms_lib.get("projective").grid(
            tf.expand_dims(homography, 0), (size, size))
    elif distortion == "E":
        tps = transforms_lib.get("tps")
        points = tf.reshape(tf.constant(tps.identity), [16, 2])
        positions = points / params["scale"] + params["control_noise"] / half_digit
        grid = tps.grid(tf.reshape(positions, [1, 32]), (size, size))

    canvas = sampling.grid_sample(images, grid)[0]
    if distortion == "TC":
        canvas = tf.maximum(canvas, _clutter(clutter, params))
    return canvas


@tf.autograph.experimental.do_not_convert
def _clutter(clutter, params):
    """Six 6×6 patches of other digits, each pasted on an empty canvas."""
    size = CANVAS_SIZES["TC"]
    if clutter is None:
        raise ValueError(
            "Distortion 'TC' needs `clutter`: six [28, 28, 1] digits to cut "
            "the clutter patches from. Received: clutter=None"
        )
    layer = tf.zeros([size, size, 1])
    sources = tf.cast(params["clutter_source"], tf.int32)
    positions = tf.cast(params["clutter_position"], tf.int32)
    for index in range(_TC_PATCHES):
        patch = tf.slice(clutter[index], tf.concat([sources[index], [0]], 0),
                         [_TC_PATCH, _TC_PATCH, 1])
        row, col = positions[index, 0], positions[index, 1]
        padded = tf.pad(patch, [[row, size - _TC_PATCH - row],
                                [col, size - _TC_PATCH - col], [0, 0]])
        layer = tf.maximum(layer, tf.reshape(padded, [size, size, 1]))
    return layer


def distorted_mnist(split, distortion, seed=0, repeat=False, mnist_dir=None,
                    data_dir=None):
    """MNIST with one of the paper's distortions, as `(image, label)` pairs.

    Every example's distortion is a pure function of `(seed, split, its
    position in the stream)`, so the test set is the same images for every
    model scored with the same seed, and a training stream is reproducible.
    With `repeat=True` the training set is reshuffled and redistorted on
    every pass (fresh distortions each epoch).

    Distortions (sizes in pixels):
        - `"R"`: rotation U(−90°, 90°); 28×28.
        - `"RTS"`: rotation U(−45°, 45°), scale U(0.7, 1.2), placed at a
          uniform random position (the scaled digit inside); 42×42.
        - `"P"`: scale U(0.75, 1), then the four corners moved by N(0, 5);
          projective; 28×28.
        - `"E"`: scale U(0.75, 1), then a 4×4 grid of control points moved
          by N(0, 1.5); thin-plate spline; 28×28.
        - `"TC"`: the digit at a uniform random position of a 60×60 canvas
          with six 6×6 patches of other digits as clutter.

    Args:
        split: `"train"`, `"test"`, `"fit"` or `"validation"` (as in
            `load_mnist`).
        distortion: one of `DISTORTIONS`.
        seed: int.
        repeat: repeat forever (training).
        mnist_dir, data_dir: as in `load_mnist`.

    Returns:
        A `tf.data.Dataset` of float32 `[S, S, 1]` images in [0, 1] and
        int64 labels, unbatched.
    """
    _check_distortion(distortion)
    base = load_mnist(split, mnist_dir=mnist_dir, data_dir=data_dir)
    stream_seed = 2 * int(seed) + _SPLITS.index(split)
    dataset = base
    if repeat:
        dataset = dataset.shuffle(10000, seed=stream_seed).repeat()
    if distortion == "TC":
        others = base.shuffle(10000, seed=stream_seed + 7919).repeat()
        others = others.map(lambda image, label: image).batch(_TC_PATCHES)
        dataset = tf.data.Dataset.zip((dataset, others))
    else:
        dataset = dataset.map(lambda image, label: ((image, label), None))

    def distort(index, example):
        (image, label), clutter = example
        seed_pair = tf.stack([tf.constant(stream_seed, tf.int64), index])
        params = sample_distortion(distortion, seed_pair)
        return apply_distortion(image, distortion, params, clutter), label

    return dataset.enumerate().map(distort, num_parallel_calls=tf.data.AUTOTUNE)
