"""Pictures of the paper's five distortions, as the main job draws them.

    KERAS_STN_MNIST_DIR=../shared/data/mnist python examples/distortion_gallery.py \\
        [--output saved_models/distortions.png] [--examples 12] [--ink]

One row per distortion (R, RTS, P, E, TC): the first test digits of the
fixed test set (seed 0) that `keras-stn train` scores, so what the README
says about each recipe can be checked by eye. `--ink` also measures, over
the whole test set, how much of each digit's ink a distortion keeps: the
evidence for why P is harder here than in the paper.
"""

import argparse

import numpy as np

from keras_stn.paper import datasets


def draw(path, examples=12, seed=0, mnist_dir=None):
    # Imported here: matplotlib is an optional (examples) dependency.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(datasets.DISTORTIONS), examples,
                                figsize=(examples * 0.9, 5 * 0.95))
    for row, distortion in enumerate(datasets.DISTORTIONS):
        images, labels = next(iter(datasets.distorted_mnist(
            "test", distortion, seed=seed, batch_size=examples,
            count=examples, mnist_dir=mnist_dir)))
        for col in range(examples):
            axis = axes[row, col]
            axis.imshow(images[col, ..., 0], cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if col == 0:
                size = datasets.CANVAS_SIZES[distortion]
                axis.set_ylabel(f"{distortion}\n{size}²", fontsize=9)
            axis.set_title(str(int(labels[col])), fontsize=8)
    figure.suptitle("The main job's test digits (seed 0), one distortion per row")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def ink_kept(distortion, seed=0, mnist_dir=None, count=None, batch_size=500):
    """Per test digit: distorted ink over original ink, over its scale².

    Ink is the sum of pixel values. A warp that only moves the digit keeps
    all of it (1.0, up to resampling); scaling by `s` keeps `s²`, so the
    ratio is divided by the drawn scale squared. Far below 1: the warp
    pushed strokes off the canvas or squeezed them together. `count`: the
    first test digits only (default: all 10,000).
    """
    originals, _ = datasets.mnist_arrays("test", mnist_dir)
    originals = originals[:count]
    original_ink = originals.reshape(len(originals), -1).sum(1) / 255.0
    distorted = np.concatenate([
        images.numpy() for images, _ in datasets.distorted_mnist(
            "test", distortion, seed=seed, batch_size=batch_size,
            count=len(originals), mnist_dir=mnist_dir)])
    ratio = distorted.reshape(len(distorted), -1).sum(1) / original_ink
    params = datasets.sample_distortions(
        distortion, datasets.stream_seed("test", seed),
        np.arange(len(originals), dtype=np.int64))
    if "scale" in params:
        ratio = ratio / np.asarray(params["scale"]) ** 2
    return ratio


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="saved_models/distortions.png")
    parser.add_argument("--examples", type=int, default=12)
    parser.add_argument("--mnist-dir", default=None)
    parser.add_argument("--ink", action="store_true",
                        help="also print how much ink R, P and E keep")
    args = parser.parse_args(argv)
    print(draw(args.output, args.examples, mnist_dir=args.mnist_dir))
    if args.ink:
        for distortion in ("R", "P", "E"):
            kept = ink_kept(distortion, mnist_dir=args.mnist_dir)
            print(f"{distortion}: ink kept (relative to scale²) median "
                  f"{np.median(kept):.2f}; under 75 %: "
                  f"{100 * np.mean(kept < 0.75):.1f} % of test digits; "
                  f"under 50 %: {100 * np.mean(kept < 0.5):.1f} %")


if __name__ == "__main__":
    main()
