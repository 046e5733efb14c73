"""Commands that read results: ``leaderboard``, ``compare``, ``check-regression``, ``accept``, ``merge``.

Every one of them reads through :mod:`saliencybench.benchmark.results`, so a damaged or
foreign results file stops it with exit code 2 and one line naming the file and the line.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

from saliencybench.benchmark.cli.run import finish, load_plugins
from saliencybench.benchmark.results import RESULT_FILES, check_complete, load_results, read_manifest
from saliencybench.core.errors import UsageError


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from saliencybench.benchmark.report.leaderboard import render_csv, render_latex, render_markdown
    from saliencybench.core.io import atomic_write_text

    rd = Path(args.results_dir)
    if not (rd / "scores.csv").is_file():
        raise FileNotFoundError(f"{rd}/scores.csv not found: is '{rd}' a results directory?")
    out = Path(args.output) if args.output else None
    if args.format == "md":
        text = render_markdown(rd, out_path=out)
    elif args.format == "csv":
        text = render_csv(rd)
    else:
        text = render_latex(rd)
    if out:
        atomic_write_text(out, text)
        print(f"wrote {out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from saliencybench.benchmark.config import find_suite, load_config
    from saliencybench.benchmark.report.leaderboard import build_tables
    from saliencybench.benchmark.runner import Runner

    added = [a for a in load_plugins(args.plugin) if not a.startswith("metric:")]
    cfg = load_config(find_suite(args.suite))
    new = [m.strip() for m in args.methods.split(",")] if args.methods else added
    if not new:
        raise UsageError("the plugin registered no method (use @register_method in the plugin file)")
    baseline = Path(args.baseline or f"results/{cfg.name}")
    if not (baseline / "scores.csv").is_file():
        raise UsageError(f"no stored results in {baseline}: run `saliencybench run --suite {cfg.name}` first")
    cfg.methods = list(cfg.methods) + [m for m in new if m not in cfg.methods]
    out = Path(args.out or f"runs/compare-{cfg.name}")
    runner = Runner(cfg, out, device=args.device, progress=not args.no_progress, reuse_from=[baseline])
    manifest = runner.run()
    lb = finish(out, cfg, out / "leaderboard.md", figures=cfg.figures)
    agg, _, _ = build_tables(out)
    calls = manifest["attribution_calls"]
    recomputed = {m: n for m, n in calls.items() if n and m not in new}
    print(f"computed attributions: {', '.join(f'{m}={n}' for m, n in calls.items() if n) or 'none'}"
          f"; reused {manifest['parts']['reused']} result parts from {baseline}")
    if recomputed:
        print(f"note: recomputed existing methods (their parameters differ from the baseline): {recomputed}")
    for m in new:
        print(f"\n{m}:")
        for line in _standing(agg, m):
            print(line)
    print(f"\nleaderboard: {lb}")
    return 0


def _standing(agg: pd.DataFrame, method: str) -> list[str]:
    """One line per (dataset, model, metric): the method's mean, CI, rank and the methods
    whose CI overlaps its own."""
    from saliencybench.benchmark.aggregate import ci_overlap

    lines = []
    for (ds, model, metric), g in agg.groupby(["dataset", "model", "metric"], sort=True):
        row = g[g["method"] == method]
        if row.empty:
            continue
        r = row.iloc[0]
        mine = (r["ci_low"], r["ci_high"])
        overl = [o.method for o in g.itertuples() if o.method != method and ci_overlap(mine, (o.ci_low, o.ci_high))]
        arrow = "↑" if r["higher_is_better"] else "↓"
        lines.append(f"  {ds}/{model} {metric} {arrow}: {r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}] "
                     f"rank {int(r['rank']) if r['rank'] == r['rank'] else '-'}/{g['method'].nunique()}; "
                     f"CI overlaps {len(overl)}: {', '.join(overl[:6])}{' ...' if len(overl) > 6 else ''}")
    return lines


def cmd_check_regression(args: argparse.Namespace) -> int:
    from saliencybench.benchmark.regression import compare_results

    rep = compare_results(Path(args.new_dir), Path(args.baseline), tolerance=args.tolerance, relative=args.relative)
    print(rep.render())
    if rep.ok:
        return 0
    print(f"\nIf these changes are intended, accept them as the new baseline with:\n"
          f"  saliencybench accept {args.new_dir} --baseline {args.baseline}")
    return 1


def cmd_accept(args: argparse.Namespace) -> int:
    """Copy a run's results (scores, curves, manifest, figures) into the baseline folder and
    regenerate its leaderboard: the one command that changes the committed results. The run
    is read and validated first, so a damaged run never replaces a baseline."""
    from saliencybench.benchmark.report.figures import write_leaderboard

    src = Path(args.new_dir)
    if not (src / "scores.csv").is_file():
        raise FileNotFoundError(f"{src}/scores.csv not found: is '{src}' a results directory?")
    suite = str(load_results(src).manifest.get("suite") or src.name)
    dst = Path(args.baseline or Path("results") / suite)
    if src.resolve() == dst.resolve():
        raise UsageError(f"{src} is already the baseline")
    lb = Path(args.leaderboard) if args.leaderboard else (
        Path("leaderboard.md") if suite == "default" and args.baseline is None else dst / "leaderboard.md")
    dst.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    (dst / "curves.csv").unlink(missing_ok=True)  # older layout, superseded by curves.csv.gz
    if (src / "figures").is_dir():
        shutil.rmtree(dst / "figures", ignore_errors=True)
        shutil.copytree(src / "figures", dst / "figures")
    write_leaderboard(dst, lb)
    print(f"accepted {src} as {dst}; regenerated {lb}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge shard directories through the result store: their parts (checksums verified)
    into OUT's ``scores.csv`` / ``curves.csv.gz``, the first shard's manifest as OUT's."""
    from saliencybench.benchmark.report.figures import write_leaderboard
    from saliencybench.benchmark.store import ResultStore
    from saliencybench.core.io import write_json

    out = Path(args.out)
    store = ResultStore(out)
    manifests = []
    for s in args.shards:
        store.absorb(Path(s))
        if (Path(s) / "run.json").is_file():
            manifests.append(read_manifest(Path(s)))
    scores, _ = store.merge(strict=True)
    if manifests:
        m = dict(manifests[0])
        m["shard"] = None
        m["merged_from"] = [str(s) for s in args.shards]
        m["rows"] = int(len(scores))
        check_complete(scores, m, out / "scores.csv")
        write_json(out / "run.json", m)
    lb = write_leaderboard(out, Path(args.leaderboard) if args.leaderboard else out / "leaderboard.md")
    print(f"merged {len(args.shards)} shard(s) into {out} ({len(scores)} rows); leaderboard {lb}")
    return 0
