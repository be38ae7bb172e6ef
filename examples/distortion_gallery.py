"""Pictures of the paper's five distortions, as the main job draws them.

    KERAS_STN_MNIST_DIR=../shared/data/mnist python examples/distortion_gallery.py \\
        [--output saved_models/distortions.png] [--examples 12]

One row per distortion (R, RTS, P, E, TC): the first test digits of the
fixed test set (seed 0) that `keras-stn train` scores, so what the README
says about each recipe can be checked by eye.
"""

import argparse

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="saved_models/distortions.png")
    parser.add_argument("--examples", type=int, default=12)
    parser.add_argument("--mnist-dir", default=None)
    args = parser.parse_args(argv)
    print(draw(args.output, args.examples, mnist_dir=args.mnist_dir))


if __name__ == "__main__":
    main()
