"""Environment capture for run.json: package and library versions, platform, git sha, device."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import saliencybench


def git_sha() -> str | None:
    """The checkout's commit, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except Exception:
        return None


def environment_info(device: torch.device, *, tf32: bool = True) -> dict[str, Any]:
    """The ``environment`` record of run.json."""
    import torchvision

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "saliencybench": saliencybench.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "device": str(device),
        "git_sha": git_sha(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["tf32"] = bool(tf32 and torch.backends.cudnn.allow_tf32)
    return info
