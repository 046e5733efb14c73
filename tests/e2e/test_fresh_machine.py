"""What a new user meets: the package works installed from a wheel outside the repository, a
run in a clean clone leaves git clean (runs go to runs/, only `accept` writes results/), and
the committed results stay lean."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import REPO
from saliencybench.benchmark.cli import main
from saliencybench.benchmark.config import list_suites

SMALL_RUN = ["--n-samples", "2", "--models", "sb_resnet", "--methods", "saliency,gradcam",
             "--metrics", "insertion,deletion", "--no-progress", "--no-figures"]
RESULTS_MAX_BYTES = 8 * 2**20
PNG_MAX_BYTES = 400 * 2**10


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", **extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(d), str(REPO)]
    if importlib.util.find_spec("setuptools") is not None:
        cmd.insert(4, "--no-build-isolation")  # offline where setuptools is present; else pip fetches it
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = d.glob("saliency_bench-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_contains_every_suite_and_checkpoint(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    suites = {f"saliencybench/configs/{p.name}" for p in (REPO / "saliencybench" / "configs").glob("*.toml")}
    ckpt_dir = REPO / "saliencybench" / "models" / "checkpoints"
    ckpts = {f"saliencybench/models/checkpoints/{p.name}" for p in ckpt_dir.glob("*.pt")}
    assert len(suites) >= 5 and len(ckpts) == 3
    assert suites <= names, sorted(suites - names)
    assert ckpts <= names, sorted(ckpts - names)


@pytest.mark.slow
def test_wheel_install_outside_the_repository_lists_and_runs_the_default_suite(wheel, tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                        str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _env(PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import saliencybench; print(saliencybench.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout  # the wheel, not the checkout
    ls = subprocess.run([sys.executable, "-m", "saliencybench", "list", "suites"], cwd=work, env=env,
                        capture_output=True, text=True, timeout=300)
    assert ls.returncode == 0, ls.stderr[-3000:]
    listed = {line.split()[0] for line in ls.stdout.splitlines() if line.strip()}
    assert set(list_suites()) <= listed
    run = subprocess.run([sys.executable, "-m", "saliencybench", "run", *SMALL_RUN], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((work / "runs" / "default" / "run.json").read_text())
    assert manifest["suite"] == "default" and manifest["rows"] == 2 * 2 * 2
    assert not (work / "results").exists() and not (work / "leaderboard.md").exists()


@pytest.mark.slow
def test_default_run_in_a_clean_clone_leaves_git_clean(tmp_path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of the repository")
    clone = tmp_path / "clone"
    r = subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    env = _env(PYTHONPATH=str(clone))  # the clone's own code, byte-compiled inside the clone
    run = subprocess.run([sys.executable, "-m", "saliencybench", "run", *SMALL_RUN[:-1]], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "runs/default" in run.stdout and (clone / "runs" / "default" / "leaderboard.md").is_file()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone,
                            capture_output=True, text=True, timeout=60)
    assert status.stdout == "", status.stdout


def test_run_writes_to_runs_and_accept_is_the_one_way_into_results(tmp_path, monkeypatch, capsys):
    from helpers.toy import TOY_TOML, register_all

    register_all()
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "toy.toml"
    cfg.write_text(TOY_TOML)
    assert main(["run", "--config", str(cfg), "--no-progress", "--no-figures"]) == 0
    assert (tmp_path / "runs" / "toy" / "scores.csv").is_file()
    assert (tmp_path / "runs" / "toy" / "leaderboard.md").is_file()
    assert not (tmp_path / "results").exists() and not (tmp_path / "leaderboard.md").exists()
    capsys.readouterr()
    assert main(["accept", "runs/toy"]) == 0
    assert "results/toy" in capsys.readouterr().out
    for name in ("scores.csv", "curves.csv.gz", "run.json", "leaderboard.md"):
        assert (tmp_path / "results" / "toy" / name).is_file(), name
    assert not (tmp_path / "leaderboard.md").exists()  # only the default suite owns the root leaderboard
    # a second run of the same suite: still into runs/, and it points at the baseline
    assert main(["run", "--config", str(cfg), "--no-progress", "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "check-regression runs/toy --baseline results/toy" in out and "accept runs/toy" in out


def test_accept_of_the_default_suite_regenerates_the_root_leaderboard(tmp_path, monkeypatch):
    from helpers.toy import TOY_TOML, register_all

    register_all()
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "default.toml"
    cfg.write_text(TOY_TOML.replace('name = "toy"', 'name = "default"'))
    assert main(["run", "--config", str(cfg), "--no-progress", "--no-figures"]) == 0
    assert main(["accept", "runs/default"]) == 0
    assert (tmp_path / "results" / "default" / "scores.csv").is_file()
    assert "results/default/scores.csv" in (tmp_path / "leaderboard.md").read_text()


def test_committed_results_are_lean():
    files = [p for p in (REPO / "results").rglob("*")
             if p.is_file() and not {"parts", "cache"} & set(p.relative_to(REPO / "results").parts)]
    assert files, "no committed results found"
    total = sum(p.stat().st_size for p in files)
    assert total <= RESULTS_MAX_BYTES, f"results/ weighs {total / 2**20:.1f} MiB (limit 8 MiB)"
    big = [f"{p.relative_to(REPO)} ({p.stat().st_size // 1024} KiB)" for p in files
           if p.suffix == ".png" and p.stat().st_size > PNG_MAX_BYTES]
    assert not big, f"figures over 400 KiB: {big}"
    assert not [p for p in files if p.name == "curves.csv"], "curves are stored compressed (curves.csv.gz)"
