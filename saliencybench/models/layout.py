"""Memory layout of batched image inputs for forward-only passes.

On CPU, oneDNN's convolution and PyTorch's max pooling are 1.3-1.9x faster on channels-last
(NHWC) tensors than on NCHW ones (measured on the default zoo, 256 images of 64x64 on 2
cores). A channels-last *input* is enough: convolutions keep the layout of their input, so
the whole network runs in it, and the model itself is not touched. Outputs agree with the
NCHW forward to float rounding (~1e-6 on the zoo's logits).
"""

from __future__ import annotations

import torch
from torch import Tensor


def fast_layout(x: Tensor) -> Tensor:
    """``x`` (B,C,H,W) in channels-last layout when it runs on the CPU; otherwise unchanged."""
    if x.ndim == 4 and x.device.type == "cpu" and x.shape[1] > 1:
        return x.contiguous(memory_format=torch.channels_last)
    return x
