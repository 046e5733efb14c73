"""Datasets (synthetic, ImageNet, CUB, CIFAR, grid composites); importing this package registers them.

Direction of imports: ``datasets`` imports ``core`` and ``models`` (the grid datasets build the
grid model of their setting, :mod:`saliencybench.models.grid_settings`); ``models`` never imports
``datasets``, and ``datasets`` never imports ``training`` or ``benchmark``.
"""

from saliencybench.datasets import (  # noqa: F401 - imported for their registrations
    cifar,
    cub,
    grid,
    imagenet,
    synthetic,
)
