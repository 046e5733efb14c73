"""torchrun with 2 processes (gloo on CPU): merged results equal a single-process run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import TOY_PLUGIN, subprocess_env
from helpers.toy import TOY_TOML

PLUGIN = TOY_PLUGIN
pytestmark = pytest.mark.slow


def test_torchrun_two_processes_match_single_run(tmp_path):
    cfg = tmp_path / "toy.toml"
    cfg.write_text(TOY_TOML.replace("chunk_size = 8", "chunk_size = 4"))
    common = ["run", "--config", str(cfg), "--plugin", PLUGIN, "--no-progress", "--no-figures"]
    # torchrun gives each worker one intra-op thread; the single run gets the same, so both run
    # the same kernels on the same shapes and the results are equal bit for bit (a thread count
    # may change how a float32 reduction is split, hence its rounding).
    env = subprocess_env({k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")})
    env["OMP_NUM_THREADS"] = "1"
    single = subprocess.run([sys.executable, "-m", "saliencybench", *common, "--out", str(tmp_path / "single")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "saliencybench", *common, "--out", str(tmp_path / "ddp")],
                         capture_output=True, text=True, timeout=400, env=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert (tmp_path / "ddp" / "scores.csv").read_bytes() == (tmp_path / "single" / "scores.csv").read_bytes()
    assert (tmp_path / "ddp" / "curves.csv.gz").read_bytes() == (tmp_path / "single" / "curves.csv.gz").read_bytes()
