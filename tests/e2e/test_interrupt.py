"""Interrupted runs: SIGKILL / SIGINT at several points leave parseable files, and the same
command resumes to results identical to an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import SLOW_PLUGIN, subprocess_env
from helpers.toy import TOY_TOML

PLUGIN = SLOW_PLUGIN
pytestmark = pytest.mark.slow


# 24 samples in chunks of 4, batches of 2: toy_slow (the first method) is called 12 times and
# writes its cache chunk and metric parts between calls, so every kill point below is reached
# while toy_slow is still to be called again.
SUITE = TOY_TOML.replace("n_samples = 12", "n_samples = 24").replace("batch_size = 4", "batch_size = 2") \
    .replace("chunk_size = 8", "chunk_size = 4")
TIMEOUT = 300  # a guard against a hung child, never a wait for an outcome


def _cmd(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "saliencybench", "run", "--config", str(cfg), "--plugin", PLUGIN,
            "--methods", "toy_slow,toy_noise,toy_gxi", "--out", str(out), "--no-progress", "--no-figures"]


def _count(out: Path, pattern: str) -> int:
    d = out / ("parts" if pattern.endswith(".csv") else "cache")
    return len([p for p in d.rglob(pattern) if ".curves." not in p.name]) if d.is_dir() else 0


def _hold_when(cmd, out: Path, gate: Path, pattern: str, n: int, **popen) -> subprocess.Popen:
    """Start the run and release toy_slow's calls one at a time until at least ``n`` files
    matching ``pattern`` exist; return with the run held inside its next toy_slow call."""
    gate.mkdir()
    env = subprocess_env(PYTHONUNBUFFERED="1", SB_TEST_GATE=str(gate))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **popen)
    deadline = time.monotonic() + TIMEOUT
    k = 1
    while True:
        while not (gate / f"waiting-{k}").exists():  # the run announces its k-th call
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"run ended (code {proc.returncode}) before {n} x {pattern}: {err[-2000:]}")
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"run did not reach toy_slow call {k} in {TIMEOUT} s")
            time.sleep(0.01)
        if _count(out, pattern) >= n:
            return proc
        (gate / f"go-{k}").touch()
        k += 1


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
    cfg.write_text(SUITE)
    out = d / "out"
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=TIMEOUT, env=subprocess_env())
    assert r.returncode == 0, r.stderr
    return cfg, (out / "scores.csv").read_bytes(), (out / "curves.csv.gz").read_bytes()


@pytest.mark.parametrize("pattern,n", [("*.pt", 1), ("*.csv", 1), ("*.csv", 4), ("*.pt", 4)],
                         ids=["after-first-cache-chunk", "after-first-part", "after-four-parts", "after-four-chunks"])
def test_sigkill_then_resume_gives_identical_results(reference, tmp_path, pattern, n):
    cfg, ref_scores, ref_curves = reference
    out = tmp_path / "out"
    proc = _hold_when(_cmd(cfg, out), out, tmp_path / "gate", pattern, n)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    _assert_parseable(out)
    done_before = _count(out, "*.csv")
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=TIMEOUT, env=subprocess_env())
    assert r.returncode == 0, r.stderr
    assert not list(out.rglob("*.tmp"))  # the resumed run cleaned up after the killed one
    assert (out / "scores.csv").read_bytes() == ref_scores
    assert (out / "curves.csv.gz").read_bytes() == ref_curves
    assert f"{done_before} reused" in r.stdout or done_before == 0
    rows = pd.read_csv(out / "scores.csv")
    assert not rows.duplicated(["method", "metric", "sample_id"]).any()


def test_sigint_exits_130_with_resume_hint(reference, tmp_path):
    cfg, ref_scores, _ = reference
    out = tmp_path / "out"
    proc = _hold_when(_cmd(cfg, out), out, tmp_path / "gate", "*.csv", 1, text=True)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command again to resume" in err
    _assert_parseable(out)
    r = subprocess.run(_cmd(cfg, out), capture_output=True, text=True, timeout=TIMEOUT, env=subprocess_env())
    assert r.returncode == 0 and (out / "scores.csv").read_bytes() == ref_scores
