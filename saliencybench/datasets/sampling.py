"""Deterministic, class-balanced sample selection shared by every dataset."""

from __future__ import annotations

from typing import Sequence

import torch


def class_balanced_indices(labels: Sequence[int] | torch.Tensor, n: int | None, seed: int = 0) -> list[int]:
    """Pick ``n`` indices spread evenly over classes, deterministic given ``seed``.

    Classes are visited round-robin in class order; inside a class the order is a seeded
    permutation. With 1000 ImageNet classes and ``n=1000`` this is one image per class.
    The result is sorted by (round, class) so that a prefix of a larger selection is a
    balanced selection too. ``n=None`` or ``n >= len(labels)`` returns every index in that
    balanced order.
    """
    y = torch.as_tensor(labels).long().view(-1)
    total = int(y.numel())
    if n is None or n >= total:
        n = total
    if n < 0:
        raise ValueError("n must be non-negative")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(total, generator=g)
    by_class: dict[int, list[int]] = {}
    for i in perm.tolist():
        by_class.setdefault(int(y[i]), []).append(i)
    classes = sorted(by_class)
    out: list[int] = []
    r = 0
    while len(out) < n:
        progressed = False
        for c in classes:
            if r < len(by_class[c]):
                out.append(by_class[c][r])
                progressed = True
                if len(out) == n:
                    break
        if not progressed:
            break
        r += 1
    return out
