"""Datasets (synthetic, ImageNet, CUB, CIFAR, grid composites); importing this package registers them."""

from saliencybench.datasets import (  # noqa: F401 - imported for their registrations
    cifar,
    cub,
    grid,
    imagenet,
    synthetic,
)
