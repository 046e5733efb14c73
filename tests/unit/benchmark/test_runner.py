"""Runner, results store, cache and resume behaviour on test-local toy registrations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.toy import TOY_TOML, register_all
from saliencybench.benchmark.config import config_from_dict, load_config
from saliencybench.benchmark.results import read_scores
from saliencybench.benchmark.runner import Runner, run_suite
from saliencybench.core.errors import ConfigError

register_all()


@pytest.fixture
def toy_cfg(tmp_path):
    p = tmp_path / "toy.toml"
    p.write_text(TOY_TOML)
    return load_config(p)


def test_run_writes_long_format_results_and_manifest(toy_cfg, tmp_path):
    out = tmp_path / "res"
    manifest = run_suite(toy_cfg, out, progress=False)
    scores = read_scores(out)
    assert list(scores.columns) == ["suite", "dataset", "model", "method", "metric", "sample_id", "value", "status"]
    # 12 samples x 2 methods x 2 metrics
    assert len(scores) == 48
    assert set(scores["status"]) == {"ok"}
    curves = pd.read_csv(out / "curves.csv.gz")
    assert len(curves) == 12 * 2 * 3  # toy_curve has 3 points, toy_mean no curve
    m = json.loads((out / "run.json").read_text())
    assert m["seed"] == 0 and m["device"] == "cpu"
    assert m["attribution_calls"] == {"toy_gxi": 12, "toy_noise": 12}
    assert m["forward_passes"]["toy_curve"] == 12 * 2 * 3
    assert "torch" in m["environment"] and "timings" in m
    assert manifest["parts"]["computed"] == 2 * 2 * 2  # methods x metric groups x chunks (12 / 8)


def test_metric_value_matches_definition(toy_cfg, tmp_path):
    """toy_mean is the mean of the channel-summed map: recompute it independently."""
    from helpers.toy import ToyNet, grad_x_input, toy_dataset

    run_suite(toy_cfg, tmp_path / "r", progress=False)
    s = read_scores(tmp_path / "r")
    got = s[(s.method == "toy_gxi") & (s.metric == "toy_mean")].set_index("sample_id")["value"]
    ds = toy_dataset(n_samples=12)
    a = grad_x_input(ToyNet().eval(), ds.x, ds.y).sum(1).flatten(1).mean(1)
    np.testing.assert_allclose(got.loc[ds.sample_ids].to_numpy(), a.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_same_seed_gives_byte_identical_scores(toy_cfg, tmp_path):
    run_suite(toy_cfg, tmp_path / "a", progress=False)
    run_suite(toy_cfg, tmp_path / "b", progress=False)
    assert (tmp_path / "a" / "scores.csv").read_bytes() == (tmp_path / "b" / "scores.csv").read_bytes()
    assert (tmp_path / "a" / "curves.csv.gz").read_bytes() == (tmp_path / "b" / "curves.csv.gz").read_bytes()


def test_stochastic_method_independent_of_batch_size(toy_cfg, tmp_path):
    run_suite(toy_cfg, tmp_path / "a", progress=False)
    toy_cfg.batch_size = 1
    run_suite(toy_cfg, tmp_path / "b", progress=False)
    toy_cfg.batch_size = 16
    toy_cfg.chunk_size = 16
    run_suite(toy_cfg, tmp_path / "c", progress=False)
    a, b, c = (read_scores(tmp_path / d) for d in "abc")
    na = a[a.method == "toy_noise"]["value"].to_numpy()
    # The noise maps are drawn per sample, so they are the same whatever the batch; the scores
    # go through model forwards of other batch shapes, and BLAS kernels may round a float32
    # sum differently for another shape (3e-8 seen on an Intel Xeon): equal to float32
    # precision, not bitwise. A batch-dependent draw would give unrelated values.
    np.testing.assert_allclose(na, b[b.method == "toy_noise"]["value"].to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(na, c[c.method == "toy_noise"]["value"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_rerun_reuses_everything(toy_cfg, tmp_path):
    run_suite(toy_cfg, tmp_path / "r", progress=False)
    m2 = run_suite(toy_cfg, tmp_path / "r", progress=False)
    assert m2["parts"]["computed"] == 0 and m2["attribution_calls"] == {"toy_gxi": 0, "toy_noise": 0}


def test_corrupt_part_is_detected_and_recomputed(toy_cfg, tmp_path):
    out = tmp_path / "r"
    run_suite(toy_cfg, out, progress=False)
    before = (out / "scores.csv").read_bytes()
    part = sorted((out / "parts").rglob("toy_mean.00000.csv"))[0]
    part.write_text(part.read_text().replace("ok", "XX", 1))  # checksum no longer matches
    m2 = run_suite(toy_cfg, out, progress=False)
    assert m2["parts"]["computed"] == 1
    assert (out / "scores.csv").read_bytes() == before


def test_corrupt_cache_is_recomputed(toy_cfg, tmp_path):
    out = tmp_path / "r"
    run_suite(toy_cfg, out, progress=False)
    before = (out / "scores.csv").read_bytes()
    for f in (out / "cache").rglob("*.pt"):
        f.write_bytes(b"garbage")
    for f in (out / "parts").rglob("*.csv"):
        f.unlink()
    m2 = run_suite(toy_cfg, out, progress=False)
    assert m2["attribution_calls"]["toy_gxi"] == 12
    assert (out / "scores.csv").read_bytes() == before


def test_nonfinite_and_failing_methods_are_recorded_not_fatal(toy_cfg, tmp_path):
    toy_cfg.methods = ["toy_gxi", "toy_nan", "toy_broken"]
    m = run_suite(toy_cfg, tmp_path / "r", progress=False)
    s = read_scores(tmp_path / "r")
    nan_rows = s[s.method == "toy_nan"]
    # sample 0 of every batch has a NaN map
    bad = nan_rows[nan_rows.status == "nonfinite_attribution"]
    assert len(bad) > 0 and bad["value"].isna().all()
    assert (nan_rows[nan_rows.status == "ok"]["value"].notna()).all()
    broken = s[s.method == "toy_broken"]
    assert broken["status"].str.startswith("method_error: RuntimeError").all()
    assert any("toy_broken" in f for f in m["failures"])
    assert (s[s.method == "toy_gxi"]["status"] == "ok").all()


def test_shards_merge_to_single_run(toy_cfg, tmp_path):
    from saliencybench.benchmark.cli import main

    toy_cfg.chunk_size = 4
    run_suite(toy_cfg, tmp_path / "single", progress=False)
    for k in range(3):
        Runner(toy_cfg, tmp_path / f"s{k}", progress=False, shard=(k, 3)).run()
    assert main(["merge", str(tmp_path / "merged"), *(str(tmp_path / f"s{k}") for k in range(3))]) == 0
    assert (tmp_path / "merged" / "scores.csv").read_bytes() == (tmp_path / "single" / "scores.csv").read_bytes()
    assert (tmp_path / "merged" / "curves.csv.gz").read_bytes() == (tmp_path / "single" / "curves.csv.gz").read_bytes()


def test_config_errors_name_line_and_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[suite]\nname = "x"\nn_samples = "many"\n')
    with pytest.raises(ConfigError, match=r"bad.toml:3: \[suite\] n_samples must be int"):
        load_config(p)
    p.write_text('[suite]\nname = "x"\nbatchsize = 3\n')
    with pytest.raises(ConfigError, match=r":3: unknown key 'batchsize'"):
        load_config(p)
    p.write_text('[suite\nname=')
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="target must be"):
        config_from_dict({"suite": {"target": "oracle"}})


def test_unknown_names_in_suite_raise_with_suggestion(toy_cfg, tmp_path):
    from saliencybench.core.registry import UnknownNameError

    toy_cfg.methods = ["toy_gxj"]
    with pytest.raises(UnknownNameError, match="did you mean 'toy_gxi'"):
        Runner(toy_cfg, tmp_path)


def test_method_alias_uses_base_with_other_params(toy_cfg, tmp_path):
    toy_cfg.methods = ["toy_gxi", "toy_gxi_pos"]
    toy_cfg.method_params["toy_gxi_pos"] = {"base": "toy_gxi", "postprocess": ["sum", "positive"]}
    run_suite(toy_cfg, tmp_path / "r", progress=False)
    s = read_scores(tmp_path / "r")
    pos = s[(s.method == "toy_gxi_pos") & (s.metric == "toy_mean")]["value"]
    raw = s[(s.method == "toy_gxi") & (s.metric == "toy_mean")]["value"]
    assert (pos.to_numpy() >= raw.to_numpy() - 1e-7).all() and (pos.to_numpy() >= 0).all()


def test_not_applicable_method_leaves_no_rows(toy_cfg, tmp_path):
    toy_cfg.methods = ["toy_gxi", "toy_na"]
    m = run_suite(toy_cfg, tmp_path / "r", progress=False)
    s = read_scores(tmp_path / "r")
    assert "toy_na" not in set(s.method) and len(s) == 12 * 2
    assert "toy/toy_net/toy_na" in m["not_applicable"]
    m2 = run_suite(toy_cfg, tmp_path / "r", progress=False)
    assert m2["parts"]["computed"] == 0


def test_wrong_shape_outputs_are_recorded_per_sample(toy_cfg, tmp_path):
    toy_cfg.methods = ["toy_gxi", "toy_wrong_shape", "toy_wrong_batch"]
    run_suite(toy_cfg, tmp_path / "r", progress=False)
    s = read_scores(tmp_path / "r")
    ws = s[s.method == "toy_wrong_shape"]
    wb = s[s.method == "toy_wrong_batch"]
    assert ws["status"].str.contains("expected \\(B,C,H,W\\)").all() and ws["value"].isna().all()
    assert wb["status"].str.startswith("method_error: ValueError").all()
    assert (s[s.method == "toy_gxi"]["status"] == "ok").all()


def test_postprocess_aliases_share_one_method_call(toy_cfg, tmp_path):
    """Aliases differing only in post-processing (the S-IxG kernel sweep) call the method once."""
    from helpers.toy import grad_x_input
    from saliencybench.core.registry import register_method

    calls = []

    def counting(model, x, target, **kw):
        calls.append(x.shape[0])
        return grad_x_input(model, x, target)

    register_method("toy_counted", family="gradient")(counting)
    toy_cfg.methods = ["toy_counted", "toy_counted_k3", "toy_counted_k5"]
    toy_cfg.method_params["toy_counted_k3"] = {"base": "toy_counted", "postprocess": ["sum", "gauss:3"]}
    toy_cfg.method_params["toy_counted_k5"] = {"base": "toy_counted", "postprocess": ["sum", "gauss:5"]}
    run_suite(toy_cfg, tmp_path / "r", progress=False)
    assert sum(calls) == 12  # each of the 12 samples attributed once for all three entries
    s = read_scores(tmp_path / "r")
    a = s[(s.method == "toy_counted") & (s.metric == "toy_mean")]["value"].to_numpy()
    b = s[(s.method == "toy_counted_k5") & (s.metric == "toy_mean")]["value"].to_numpy()
    assert not np.allclose(a, b)  # the smoothing was applied


def test_no_tf32_runs_in_full_float32_and_restores(toy_cfg, tmp_path, monkeypatch):
    """Runner(tf32=False) (CLI --no-tf32) switches TF32 off for the whole run (methods and
    metrics) and restores the global flags afterwards; the default leaves them alone."""
    from helpers.toy import MeanMap

    seen = []
    orig = MeanMap.evaluate

    def spy(self, ctx, attribution):
        seen.append((torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()))
        return orig(self, ctx, attribution)

    monkeypatch.setattr(MeanMap, "evaluate", spy)
    before = (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    run_suite(toy_cfg, tmp_path / "exact", progress=False, tf32=False)
    assert seen and set(seen) == {(False, "highest")}
    assert (torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()) == before
    seen.clear()
    run_suite(toy_cfg, tmp_path / "default", progress=False)
    assert set(seen) == {before}
    a = (tmp_path / "exact" / "scores.csv").read_bytes()
    assert a == (tmp_path / "default" / "scores.csv").read_bytes()  # CPU: TF32 does not apply


def test_one_method_hash_for_cache_keys_and_shared_raw_outputs(toy_cfg, tmp_path):
    """Aliases that differ only in post-processing share the raw output (one signature) but not
    the cached maps; a stochastic method's aliases never share; every key is a method_hash."""
    from saliencybench.benchmark.jobs import method_hash

    toy_cfg.methods = ["toy_gxi", "gxi_abs", "toy_noise", "noise2"]
    toy_cfg.method_params = {"gxi_abs": {"base": "toy_gxi", "postprocess": ["abs"]}, "noise2": {"base": "toy_noise"}}
    runner = Runner(toy_cfg, tmp_path / "r", progress=False)
    gxi, gxi_abs, noise, noise2 = (runner.method_job(m) for m in toy_cfg.methods)
    assert gxi.raw_signature() == gxi_abs.raw_signature()
    assert gxi.cache_key(toy_cfg, "toy", "toy_net") != gxi_abs.cache_key(toy_cfg, "toy", "toy_net")
    assert noise.raw_signature() != noise2.raw_signature()
    assert runner._shared_raw == {gxi.raw_signature()}
    assert gxi.raw_signature() == method_hash({"base": "toy_gxi", "params": gxi.params}, seed_of="")
    assert gxi_abs.record["postprocess"] == ["abs"] and gxi_abs.meta["base"] == "toy_gxi"


def test_runner_options_are_typed(toy_cfg, tmp_path):
    from saliencybench.benchmark.runner import RunOptions

    r = Runner(toy_cfg, tmp_path / "r", RunOptions(progress=False, shard=(0, 2)))
    assert r.shard == (0, 2) and r.progress is False
    with pytest.raises(TypeError):
        Runner(toy_cfg, tmp_path / "r", progres=False)
