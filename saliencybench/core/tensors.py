"""Tensor helpers: memory layout of batched inputs, exact float32, mixed precision.

**Layout.** On CPU, oneDNN's convolution and PyTorch's max pooling are 1.3-1.9x faster on channels-last
(NHWC) tensors than on NCHW ones (measured on the default zoo, 256 images of 64x64 on 2
cores). A channels-last *input* is enough: convolutions keep the layout of their input, so
the whole network runs in it, and the model itself is not touched. Outputs agree with the
NCHW forward to float rounding (~1e-6 on the zoo's logits).

**Exact float32.** PyTorch lets cuDNN convolutions use TF32 by default on Ampere and newer
GPUs (10-bit mantissa, about 1e-3 relative error). Checks that compare two computations of
the same function (LRP's traced forward against ``model(x)``, a GridPG backbone/head split
against the model) test structure, not rounding, so they run in :func:`exact_fp32`.

**Mixed precision.** :func:`autocast_dtype` is the one parser of the ``autocast`` option
(off / bf16 / fp16) and :func:`autocast` the context the metrics' model forwards run in.

**Map shapes.** Attribution maps and masks arrive as (B,H,W), (B,1,H,W) or (B,C,H,W):
:func:`as_map_batch` is the one place that adds the channel axis, :func:`single_channel_map`
the one that also sums channels and resizes to the size a metric scores at.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor


def fast_layout(x: Tensor) -> Tensor:
    """``x`` (B,C,H,W) in channels-last layout when it runs on the CPU; otherwise unchanged."""
    if x.ndim == 4 and x.device.type == "cpu" and x.shape[1] > 1:
        return x.contiguous(memory_format=torch.channels_last)
    return x


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


AUTOCAST_MODES = {"off": None, "false": None, "none": None, "": None,
                  "bf16": torch.bfloat16, "true": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(mode: str | bool | None) -> torch.dtype | None:
    """The dtype of an ``autocast`` option (``off``/``bf16``/``fp16``; None when off).

    Raises ValueError for anything else.
    """
    key = "off" if mode is None else str(mode).lower()
    if key not in AUTOCAST_MODES:
        raise ValueError(f"autocast must be off, bf16 or fp16, got {mode!r}")
    return AUTOCAST_MODES[key]


def autocast(device: torch.device, mode: str | bool | None) -> AbstractContextManager:
    """bf16/fp16 autocast on CUDA for ``mode``; a no-op on other devices or when off."""
    dtype = autocast_dtype(mode)
    if dtype is None or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def as_map_batch(a: Tensor) -> Tensor:
    """A (B,H,W) map or mask as (B,1,H,W); 4-d tensors are returned unchanged."""
    return a.unsqueeze(1) if a.ndim == 3 else a


def single_channel_map(a: Tensor, size: tuple[int, int] | torch.Size | None = None) -> Tensor:
    """(B,H,W), (B,1,H,W) or (B,C,H,W) -> (B,1,H,W): channels summed, then bilinearly resized
    (``align_corners=False``) to ``size`` when given and different."""
    a = as_map_batch(a)
    if a.shape[1] != 1:
        a = a.sum(1, keepdim=True)
    if size is not None and tuple(a.shape[-2:]) != tuple(size):
        a = F.interpolate(a, size=tuple(size), mode="bilinear", align_corners=False)
    return a
