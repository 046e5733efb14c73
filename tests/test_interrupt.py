"""Interrupted runs: SIGKILL / SIGINT at several points leave parseable files, and the same
command resumes to results identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from _toy import TOY_TOML

PLUGIN = str(Path(__file__).with_name("slow_plugin.py"))
pytestmark = pytest.mark.slow


def _cmd(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "saliencybench", "run", "--config", str(cfg), "--plugin", PLUGIN,
            "--methods", "toy_slow,toy_noise,toy_gxi", "--out", str(out), "--no-progress", "--no-figures"]


def _count(out: Path, pattern: str) -> int:
    d = out / ("parts" if pattern.endswith(".csv") else "cache")
    return len([p for p in d.rglob(pattern) if ".curves." not in p.name]) if d.is_dir() else 0


def _kill_when(cmd, out: Path, pattern: str, n: int, sig: int) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and _count(out, pattern) < n:
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc.returncode


def _assert_parseable(out: Path) -> None:
    """Every results file in place is complete (a killed writer leaves only hidden temp files)."""
    for f in list((out / "parts").rglob("*.csv")) if (out / "parts").is_dir() else []:
        assert not f.name.startswith(".")
        pd.read_csv(f)
    for f in list((out / "cache").rglob("*.pt")) if (out / "cache").is_dir() else []:
        assert not f.name.startswith(".")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    cfg = d / "toy.toml"
    cfg.write_text(TOY_TOML)
    out = d / "out"
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return cfg, (out / "scores.csv").read_bytes(), (out / "curves.csv").read_bytes()


@pytest.mark.parametrize("pattern,n", [("*.pt", 1), ("*.csv", 1), ("*.csv", 4), ("*.pt", 4)],
                         ids=["after-first-cache-chunk", "after-first-part", "after-four-parts", "after-four-chunks"])
def test_sigkill_then_resume_gives_identical_results(reference, tmp_path, pattern, n):
    cfg, ref_scores, ref_curves = reference
    out = tmp_path / "out"
    code = _kill_when(_cmd(cfg, out), out, pattern, n, signal.SIGKILL)
    assert code == -signal.SIGKILL
    _assert_parseable(out)
    done_before = _count(out, "*.csv")
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not list(out.rglob("*.tmp"))  # the resumed run cleaned up after the killed one
    assert (out / "scores.csv").read_bytes() == ref_scores
    assert (out / "curves.csv").read_bytes() == ref_curves
    assert f"{done_before} reused" in r.stdout or done_before == 0
    rows = pd.read_csv(out / "scores.csv")
    assert not rows.duplicated(["method", "metric", "sample_id"]).any()


def test_sigint_exits_130_with_resume_hint(reference, tmp_path):
    cfg, ref_scores, _ = reference
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(_cmd(cfg, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    while time.time() < deadline and _count(out, "*.csv") < 1:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "run the same command again to resume" in err
    _assert_parseable(out)
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (out / "scores.csv").read_bytes() == ref_scores
