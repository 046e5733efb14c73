"""exact_fp32: TF32 off inside the block, the global settings restored afterwards, also on error."""

from __future__ import annotations

import pytest
import torch

from saliencybench.core.tensors import exact_fp32


def test_exact_fp32_switches_tf32_off_and_restores() -> None:
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    try:
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        with exact_fp32():
            assert torch.backends.cudnn.allow_tf32 is False
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.backends.cudnn.allow_tf32 is True
        assert torch.get_float32_matmul_precision() == "high"
        with pytest.raises(RuntimeError), exact_fp32():
            raise RuntimeError("boom")
        assert torch.backends.cudnn.allow_tf32 is True
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cudnn.allow_tf32 = conv
        torch.set_float32_matmul_precision(matmul)
