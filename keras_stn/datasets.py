"""MNIST through tensorflow-datasets, online or offline from the IDX files.

Offline, point `mnist_dir` (or the environment variable
`KERAS_STN_MNIST_DIR`) at a folder holding the four original MNIST files
(`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`): it is passed to
tfds as its manual download folder, tfds checks the files' checksums and
never goes online. Online users need neither.
"""

import os

import tensorflow as tf

MNIST_DIR_ENV = "KERAS_STN_MNIST_DIR"
DATA_DIR_ENV = "KERAS_STN_DATA_DIR"
_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_SPLITS = ("train", "test")


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
    return str(mnist_dir)


def load_mnist(split="train", mnist_dir=None, data_dir=None):
    """MNIST as a `tf.data.Dataset` of `(image, label)` pairs.

    Args:
        split: `"train"` (60,000 digits) or `"test"` (10,000).
        mnist_dir: folder of the four original IDX files for offline use;
            defaults to `$KERAS_STN_MNIST_DIR`; `None` downloads.
        data_dir: where tfds keeps the prepared dataset; defaults to
            `$KERAS_STN_DATA_DIR`, else tfds' default (`~/tensorflow_datasets`).

    Returns:
        A dataset of float32 images `[28, 28, 1]` in [0, 1] and int64 labels,
        in tfds' stored (deterministic) order.

    Example:

    ```python
    train = keras_stn.datasets.load_mnist("train", mnist_dir="data/mnist")
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
        split=split,
        as_supervised=True,
        shuffle_files=False,
        data_dir=data_dir,
        download_and_prepare_kwargs={"download_config": download_config},
    )

    def to_float(image, label):
        return tf.cast(image, tf.float32) / 255.0, label

    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
