"""The command line end to end on toy registrations (through --plugin) and the real registry."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from helpers import TOY_PLUGIN, subprocess_env
from helpers.toy import TOY_TOML, register_all
from saliencybench.benchmark.cli import main

register_all()
PLUGIN = TOY_PLUGIN


@pytest.fixture
def toy_config(tmp_path):
    p = tmp_path / "toy.toml"
    p.write_text(TOY_TOML)
    return p


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "saliencybench", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env=subprocess_env())


def test_unknown_method_exits_2_with_suggestion(toy_config, capsys):
    code = main(["run", "--config", str(toy_config), "--methods", "toy_gxj", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown method 'toy_gxj'" in err and "did you mean 'toy_gxi'" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_arguments_exit_2_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--n-samples", "lots"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid int value" in err[0]
    assert main(["run", "--shard", "3/2"]) == 2
    assert main(["run", "--n-samples", "0"]) == 2


def test_list_with_wildcard(capsys):
    assert main(["list", "methods", "toy_*"]) == 0
    out = capsys.readouterr().out
    assert "toy_gxi" in out and "toy_noise" in out
    assert main(["list", "metrics", "toy_*"]) == 0
    out = capsys.readouterr().out
    assert "toy_mean" in out and "↑ higher is better" in out
    assert main(["list", "methods", "zzz*"]) == 1


def test_run_leaderboard_and_regression_cli(toy_config, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["run", "--config", str(toy_config), "--out", str(out), "--no-progress"]) == 0
    assert (out / "scores.csv").is_file() and (out / "run.json").is_file()
    lb = (out / "leaderboard.md").read_text()
    assert "## toy / toy_net" in lb and "`toy_gxi`" in lb and "toy_mean ↑" in lb
    assert main(["leaderboard", str(out), "--format", "csv"]) == 0
    assert "mean_rank" in capsys.readouterr().out
    assert main(["leaderboard", str(out), "--format", "latex"]) == 0
    assert "\\begin{tabular}" in capsys.readouterr().out
    # identical results pass the regression check
    assert main(["check-regression", str(out), "--baseline", str(out)]) == 0
    assert main(["leaderboard", str(tmp_path / "nothing")]) == 1


def test_plugin_method_appears_in_leaderboard(toy_config, tmp_path):
    """A method defined outside the package, passed with --plugin, is ranked with the others."""
    plugin = tmp_path / "my_method.py"
    plugin.write_text(
        "import torch\n"
        "from saliencybench import register_method\n"
        "@register_method('my_center', family='plugin')\n"
        "def my_center(model, x, target, **kw):\n"
        "    h, w = x.shape[-2:]\n"
        "    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')\n"
        "    d = -((yy - h / 2) ** 2 + (xx - w / 2) ** 2).float()\n"
        "    return d.expand(x.shape[0], 1, h, w).to(x.device)\n"
    )
    out = tmp_path / "res"
    r = run_cli("run", "--config", str(toy_config), "--plugin", PLUGIN, "--plugin", str(plugin),
                "--methods", "toy_gxi,my_center", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    lb = (out / "leaderboard.md").read_text()
    assert "`my_center`" in lb and "`toy_gxi`" in lb


def test_help_has_examples():
    r = run_cli("run", "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "saliencybench run --methods" in r.stdout


# -- damaged results: every command that reads results exits 2 with one line naming file:line ---

@pytest.fixture(scope="module")
def toy_results(tmp_path_factory):
    """A finished toy run (12 samples) and two shard runs of the same suite (chunks of 4)."""
    root = tmp_path_factory.mktemp("results")
    cfg = root / "toy.toml"
    cfg.write_text(TOY_TOML)
    assert main(["run", "--config", str(cfg), "--out", str(root / "good"), "--no-progress"]) == 0
    for k in range(2):
        assert main(["run", "--config", str(cfg), "--out", str(root / f"shard{k}"), "--shard", f"{k}/2",
                     "--no-progress"]) == 0
    return root


def _cut_mid_line(d):
    data = (d / "scores.csv").read_bytes()
    (d / "scores.csv").write_bytes(data[: len(data) - 7])  # an interrupted copy
    return "scores.csv", data.count(b"\n")


def _missing_column(d):
    df = pd.read_csv(d / "scores.csv", dtype=str, keep_default_na=False)
    (d / "scores.csv").write_text(df.drop(columns="metric").to_csv(index=False))
    return "scores.csv", 1


def _wrong_type(d):
    lines = (d / "scores.csv").read_text().splitlines(keepends=True)
    cells = lines[3].split(",")
    cells[6] = "lots"
    lines[3] = ",".join(cells)
    (d / "scores.csv").write_text("".join(lines))
    return "scores.csv", 4


def _fewer_samples(d):
    lines = (d / "scores.csv").read_text().splitlines(keepends=True)
    (d / "scores.csv").write_text("".join(lines[:2] + lines[3:]))  # one sample of the first cell lost
    return "scores.csv", 2


def _not_results(d):
    (d / "scores.csv").write_text("name,score\nfoo,1\n")
    return "scores.csv", 1


def _too_many_fields(d):
    lines = (d / "scores.csv").read_text().splitlines(keepends=True)
    lines[4] = lines[4].rstrip("\n") + ",extra\n"
    (d / "scores.csv").write_text("".join(lines))
    return "scores.csv", 5


def _bad_manifest(d):
    (d / "run.json").write_text('{"suite": "toy",\n "seed": }\n')
    return "run.json", 2


DAMAGE = {"cut_mid_line": _cut_mid_line, "missing_column": _missing_column, "wrong_type": _wrong_type,
          "fewer_samples": _fewer_samples, "not_results": _not_results, "too_many_fields": _too_many_fields,
          "bad_run_json": _bad_manifest}


def _commands(bad, good, tmp):
    return {
        "leaderboard": ["leaderboard", str(bad)],
        "check-regression new": ["check-regression", str(bad), "--baseline", str(good)],
        "check-regression baseline": ["check-regression", str(good), "--baseline", str(bad)],
        "accept": ["accept", str(bad), "--baseline", str(tmp / "accepted"), "--leaderboard", str(tmp / "lb.md")],
        "compare": ["compare", "--plugin", PLUGIN, "--methods", "toy_gxi", "--suite", str(bad.parent / "toy.toml"),
                    "--baseline", str(bad), "--out", str(tmp / "cmp"), "--no-progress"],
    }


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("command", ["leaderboard", "check-regression new", "check-regression baseline",
                                     "accept", "compare"])
def test_damaged_results_exit_2_naming_file_and_line(toy_results, tmp_path, capsys, damage, command):
    bad = toy_results / f"bad-{damage}-{command.replace(' ', '-')}"
    shutil.copytree(toy_results / "good", bad)
    name, line = DAMAGE[damage](bad)
    capsys.readouterr()
    code = main(_commands(bad, toy_results / "good", tmp_path)[command])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and f"{bad / name}:{line}:" in err[0], err
    if command == "accept":
        assert not (tmp_path / "accepted" / "scores.csv").exists()  # a damaged run never replaces a baseline


def test_valid_results_read_as_before(toy_results):
    from saliencybench.benchmark.results import load_results

    res = load_results(toy_results / "good")
    raw = pd.read_csv(toy_results / "good" / "scores.csv", dtype={"sample_id": str, "status": str},
                      keep_default_na=False, na_values={"value": ["nan", "NaN", ""]})
    pd.testing.assert_frame_equal(res.scores, raw)
    assert res.scores["sample_id"].map(type).eq(str).all() and res.scores["value"].dtype == "float64"
    assert set(res.curves.columns) >= {"step", "x", "value"} and res.manifest["suite"] == "toy"


def _merge_missing_shard(root, tmp):
    return [str(root / "shard0")], f"{tmp / 'merged' / 'scores.csv'}:"


def _merge_bad_manifest(root, tmp):
    bad = tmp / "shard1"
    shutil.copytree(root / "shard1", bad)
    (bad / "run.json").write_text("[1, 2]\n")
    return [str(root / "shard0"), str(bad)], f"{bad / 'run.json'}:1:"


def _merge_damaged_part(root, tmp):
    bad = tmp / "shard1"
    shutil.copytree(root / "shard1", bad)
    part = next(p for p in sorted((bad / "parts").rglob("*.csv")) if not p.name.endswith(".curves.csv"))
    part.write_bytes(part.read_bytes()[:-5])
    return [str(root / "shard0"), str(bad)], ".csv:1:"


def _merge_not_results(root, tmp):
    (tmp / "empty").mkdir()
    return [str(root / "shard0"), str(tmp / "empty")], f"{tmp / 'empty' / 'parts'}:1:"


@pytest.mark.parametrize("case", [_merge_missing_shard, _merge_bad_manifest, _merge_damaged_part, _merge_not_results],
                         ids=["missing_shard", "bad_run_json", "damaged_part", "not_results"])
def test_merge_of_damaged_shards_exits_2_naming_file_and_line(toy_results, tmp_path, capsys, case):
    shards, where = case(toy_results, tmp_path)
    capsys.readouterr()
    code = main(["merge", str(tmp_path / "merged"), *shards])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and where in err[0], err


def test_merge_of_all_shards_equals_the_single_run(toy_results, tmp_path):
    assert main(["merge", str(tmp_path / "m"), str(toy_results / "shard0"), str(toy_results / "shard1")]) == 0
    assert (tmp_path / "m" / "scores.csv").read_bytes() == (toy_results / "good" / "scores.csv").read_bytes()
