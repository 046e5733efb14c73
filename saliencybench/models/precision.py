"""Exact float32 arithmetic for structural checks on CUDA.

PyTorch lets cuDNN convolutions use TF32 by default on Ampere and newer GPUs (10-bit mantissa,
about 1e-3 relative error). Checks that compare two computations of the same function (LRP's
traced forward against ``model(x)``, a GridPG backbone/head split against the model) test
structure, not rounding, so they run with TF32 switched off; the global flags are restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def exact_fp32() -> Iterator[None]:
    """Within the block, float32 convolutions and matrix products on CUDA use full float32
    (no TF32); the previous settings come back afterwards, also on error. No effect on CPU."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    try:
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = conv
        torch.set_float32_matmul_precision(matmul)
