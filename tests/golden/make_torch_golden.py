"""Records golden values from PyTorch's affine_grid / grid_sample.

Run once, with torch 2.13.0 installed (`pip install torch==2.13.0`), from the
repository root:

    python tests/golden/make_torch_golden.py

It writes `tests/golden/torch_golden.npz`, which the test suite reads; the
test suite itself never imports torch. Arrays are stored channels-last
(NHWC) as keras_stn takes them; PyTorch was given the NCHW transposes.
"""

import itertools
import os

import numpy as np
import torch

INTERPOLATIONS = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")
GRID_SIZES = ((1, 1), (1, 5), (4, 1), (3, 4), (5, 5), (6, 7))


def _key(*parts):
    return "/".join(str(part) for part in parts)


def main():
    rng = np.random.default_rng(20151207)
    golden = {"torch_version": np.array(torch.__version__)}

    for align_corners in (False, True):
        for height, width in GRID_SIZES:
            theta = rng.normal(0.0, 1.0, (3, 2, 3)).astype(np.float32)
            grid = torch.nn.functional.affine_grid(
                torch.from_numpy(theta), (3, 1, height, width),
                align_corners=align_corners)
            golden[_key("affine_grid", align_corners, height, width, "theta")] = theta
            golden[_key("affine_grid", align_corners, height, width, "grid")] = grid.numpy()

    # Images of odd and even sizes; grids from random θ near the identity
    # (reaching outside the image) plus uniform points in [-1.6, 1.6].
    images = rng.normal(0.0, 1.0, (2, 5, 6, 3)).astype(np.float32)
    upstream = rng.normal(0.0, 1.0, (2, 4, 7, 3)).astype(np.float32)
    golden["images"] = images
    golden["upstream"] = upstream
    identity = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    theta = (identity + rng.normal(0.0, 0.6, (2, 2, 3))).astype(np.float32)
    golden["theta"] = theta
    uniform = rng.uniform(-1.6, 1.6, (2, 4, 7, 2)).astype(np.float32)
    golden["uniform_grid"] = uniform

    for interpolation, padding_mode, align_corners in itertools.product(
            INTERPOLATIONS, PADDING_MODES, (False, True)):
        for grid_name in ("theta", "uniform"):
            if grid_name == "theta":
                grid = torch.nn.functional.affine_grid(
                    torch.from_numpy(theta), (2, 3, 4, 7),
                    align_corners=align_corners).detach().numpy()
            else:
                grid = uniform
            images_t = torch.from_numpy(images).permute(0, 3, 1, 2).clone()
            images_t.requires_grad_(True)
            grid_t = torch.from_numpy(grid).clone().requires_grad_(True)
            out = torch.nn.functional.grid_sample(
                images_t, grid_t, mode=interpolation,
                padding_mode=padding_mode, align_corners=align_corners)
            out_nhwc = out.permute(0, 2, 3, 1)
            (out_nhwc * torch.from_numpy(upstream)).sum().backward()
            prefix = _key(interpolation, padding_mode, align_corners, grid_name)
            golden[prefix + "/grid"] = grid
            golden[prefix + "/output"] = out_nhwc.detach().numpy()
            golden[prefix + "/grad_images"] = (
                images_t.grad.permute(0, 2, 3, 1).numpy())
            golden[prefix + "/grad_grid"] = grid_t.grad.numpy()

    # Volumes: 5-D affine_grid / grid_sample ("bilinear" is trilinear there).
    for align_corners in (False, True):
        for depth, height, width in ((1, 1, 1), (2, 3, 4), (3, 4, 5)):
            theta = rng.normal(0.0, 1.0, (2, 3, 4)).astype(np.float32)
            grid = torch.nn.functional.affine_grid(
                torch.from_numpy(theta), (2, 1, depth, height, width),
                align_corners=align_corners)
            prefix = _key("affine_grid_3d", align_corners, depth, height, width)
            golden[prefix + "/theta"] = theta
            golden[prefix + "/grid"] = grid.numpy()
    volumes = rng.normal(0.0, 1.0, (2, 3, 4, 5, 2)).astype(np.float32)
    upstream = rng.normal(0.0, 1.0, (2, 2, 3, 4, 2)).astype(np.float32)
    identity = np.eye(3, 4, dtype=np.float32)
    theta = (identity + rng.normal(0.0, 0.5, (2, 3, 4))).astype(np.float32)
    uniform = rng.uniform(-1.6, 1.6, (2, 2, 3, 4, 3)).astype(np.float32)
    golden["volumes"] = volumes
    golden["volume_upstream"] = upstream
    for interpolation, padding_mode, align_corners in itertools.product(
            ("bilinear", "nearest"), PADDING_MODES, (False, True)):
        for grid_name in ("theta", "uniform"):
            if grid_name == "theta":
                grid = torch.nn.functional.affine_grid(
                    torch.from_numpy(theta), (2, 2, 2, 3, 4),
                    align_corners=align_corners).detach().numpy()
            else:
                grid = uniform
            volumes_t = torch.from_numpy(volumes).permute(0, 4, 1, 2, 3).clone()
            volumes_t.requires_grad_(True)
            grid_t = torch.from_numpy(grid).clone().requires_grad_(True)
            out = torch.nn.functional.grid_sample(
                volumes_t, grid_t, mode=interpolation,
                padding_mode=padding_mode, align_corners=align_corners)
            out_ndhwc = out.permute(0, 2, 3, 4, 1)
            (out_ndhwc * torch.from_numpy(upstream)).sum().backward()
            prefix = _key("3d", interpolation, padding_mode, align_corners,
                          grid_name)
            golden[prefix + "/grid"] = grid
            golden[prefix + "/output"] = out_ndhwc.detach().numpy()
            golden[prefix + "/grad_images"] = (
                volumes_t.grad.permute(0, 2, 3, 4, 1).numpy())
            golden[prefix + "/grad_grid"] = grid_t.grad.numpy()

    _record_theta_gradients(golden)

    path = os.path.join(os.path.dirname(__file__), "torch_golden.npz")
    np.savez_compressed(path, **golden)
    print(f"wrote {len(golden)} arrays to {path}")


def _theta_gradient(images, theta, upstream, interpolation, padding_mode,
                    align_corners):
    """d sum(grid_sample(images, affine_grid(θ)) * upstream) / dθ."""
    theta_t = torch.from_numpy(theta).clone().requires_grad_(True)
    images_t = torch.from_numpy(images).permute(0, 3, 1, 2)
    grid = torch.nn.functional.affine_grid(
        theta_t, (images.shape[0], images.shape[3]) + upstream.shape[1:3],
        align_corners=align_corners)
    out = torch.nn.functional.grid_sample(
        images_t, grid, mode=interpolation, padding_mode=padding_mode,
        align_corners=align_corners)
    (out.permute(0, 2, 3, 1) * torch.from_numpy(upstream)).sum().backward()
    return theta_t.grad.numpy()


def _record_theta_gradients(golden):
    """θ gradients where sampling has kinks: at the identity θ (every pixel
    coordinate a few ulps from an integer, on sizes where that side differs
    between roundings), on a constant image (border/reflection: zero), and
    for random rotations and scales."""
    rng = np.random.default_rng(20260101)
    identity = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))
    for height, width in ((5, 6), (11, 18), (13, 17), (28, 28)):
        images = rng.uniform(0, 1, (2, height, width, 2)).astype(np.float32)
        upstream = rng.normal(0, 1, (2, height, width, 2)).astype(np.float32)
        prefix = _key("identity_theta", height, width)
        golden[prefix + "/images"] = images
        golden[prefix + "/upstream"] = upstream
        for interpolation, padding_mode, align_corners in itertools.product(
                ("bilinear", "bicubic"), PADDING_MODES, (False, True)):
            golden[_key(prefix, interpolation, padding_mode, align_corners)] = (
                _theta_gradient(images, identity, upstream, interpolation,
                                padding_mode, align_corners))
    constant = np.full((1, 5, 6, 1), 2.5, np.float32)
    for padding_mode, align_corners in itertools.product(PADDING_MODES,
                                                         (False, True)):
        golden[_key("constant_identity", padding_mode, align_corners)] = (
            _theta_gradient(constant, identity[:1], np.ones_like(constant),
                            "bilinear", padding_mode, align_corners))
    batch = 16
    angle = rng.uniform(-0.5, 0.5, batch)
    scale = rng.uniform(0.8, 1.25, batch)
    shift = rng.uniform(-0.2, 0.2, (batch, 2))
    theta = np.stack([
        np.stack([scale * np.cos(angle), -scale * np.sin(angle), shift[:, 0]],
                 -1),
        np.stack([scale * np.sin(angle), scale * np.cos(angle), shift[:, 1]],
                 -1)], 1).astype(np.float32)
    images = rng.uniform(0, 1, (batch, 28, 28, 1)).astype(np.float32)
    upstream = rng.normal(0, 1, (batch, 28, 28, 1)).astype(np.float32)
    golden["random_theta/theta"] = theta
    golden["random_theta/images"] = images
    golden["random_theta/upstream"] = upstream
    for padding_mode, align_corners in itertools.product(PADDING_MODES,
                                                         (False, True)):
        golden[_key("random_theta", padding_mode, align_corners)] = (
            _theta_gradient(images, theta, upstream, "bilinear",
                            padding_mode, align_corners))


if __name__ == "__main__":
    main()
