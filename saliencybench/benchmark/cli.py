"""Command-line interface: ``saliencybench run | list | leaderboard | compare | check-regression | accept | merge | train``.

Exit codes: 0 success, 1 runtime failure, 2 usage error (bad arguments, unknown names,
malformed config), 130 interrupted (the same command resumes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from saliencybench.benchmark.store import CURVES_FILE, RESULT_FILES
from saliencybench.core.errors import UsageError

EXAMPLES = {
    "main": """
examples:
  saliencybench run                                  # default suite -> runs/default (+ its leaderboard.md)
  saliencybench run --methods 'grad*,saliency' --models sb_resnet --n-samples 16 --out runs/quick
  saliencybench run --suite gridpg-default
  saliencybench accept runs/default                  # the one way to update results/ and leaderboard.md
  saliencybench list methods 'lrp*'
  saliencybench leaderboard results/default -o leaderboard.md
  saliencybench compare --plugin examples/my_method.py --suite default
  saliencybench check-regression runs/ci --baseline results/default
""",
    "run": """
examples:
  saliencybench run
  saliencybench run --suite default --device cuda
  saliencybench run --suite gridpg-default --device cuda --no-tf32   # CPU-comparable float32 on the GPU
  saliencybench run --suite otsuki2024-imagenet --n-samples 1000 --device cuda
  saliencybench run --config my_suite.toml          # any suite file
  saliencybench run --methods 'saliency,ixg,lrp*' --metrics insertion,deletion,id_score --out runs/lrp
  saliencybench run --plugin my_method.py --methods my_method,gradcam --out runs/mine
  saliencybench run --shard 0/4 --out runs/shard0      # cluster job arrays; then `saliencybench merge`
  torchrun --nproc_per_node=2 -m saliencybench run --out runs/ddp
A run writes to runs/<suite>/ (or --out) and never to the committed results/; an interrupted run
resumes when the same command is run again: finished parts are kept.
""",
    "list": """
examples:
  saliencybench list methods
  saliencybench list methods 'grad*'
  saliencybench list metrics 'quantus:*'
  saliencybench list models
  saliencybench list suites
""",
    "leaderboard": """
examples:
  saliencybench leaderboard results/default -o leaderboard.md
  saliencybench leaderboard runs/lrp --format latex -o table.tex
""",
    "compare": """
examples:
  saliencybench compare --plugin examples/my_method.py --suite default
  saliencybench compare --plugin my_method.py --methods my_method --baseline results/default --out runs/compare
Only the plugin's methods are computed; every other result is reused from the baseline.
""",
    "check-regression": """
examples:
  saliencybench check-regression runs/ci --baseline results/default
  saliencybench check-regression runs/ci --baseline results/default --tolerance 0.01 --relative
Exit code 1 when any mean score moved beyond the tolerance, in either direction.
""",
    "accept": """
examples:
  saliencybench accept runs/default                   # -> results/default and leaderboard.md
  saliencybench accept runs/gridpg-default            # -> results/gridpg-default (+ its leaderboard.md)
  saliencybench accept runs/mine --baseline results/mine --leaderboard results/mine/leaderboard.md
""",
    "train": """
examples:
  saliencybench train sb_resnet                       # default zoo, embedded data, CPU minutes
  saliencybench train sb_vgg --epochs 8 --seed 0
  saliencybench train nib_vgg_cifar10 --arch nib_vgg16 --root ~/data/cifar --device cuda   # 004 recipe
  saliencybench train resnet50_cub --root ~/data/CUB_200_2011 --device cuda                # 000 Table A
""",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, never a traceback
        sys.stderr.write(f"saliencybench: error: {message} (see --help)\n")
        raise SystemExit(2)


def _fmt(name: str):
    return lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=36)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="saliencybench", description="Evaluation benchmark for image attribution (saliency) methods.",
                epilog=EXAMPLES["main"], formatter_class=_fmt("main"))
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    r = sub.add_parser("run", help="run a suite (default: the offline default suite)", epilog=EXAMPLES["run"],
                       formatter_class=_fmt("run"))
    src = r.add_mutually_exclusive_group()
    src.add_argument("--suite", default=None, help="named suite shipped with the package, see `list suites` "
                     "(default: default)")
    src.add_argument("--config", default=None, help="suite TOML file (any path)")
    r.add_argument("--methods", help="comma list of methods (wildcards allowed), replaces the suite's")
    r.add_argument("--metrics", help="comma list of metrics (wildcards allowed)")
    r.add_argument("--models", help="comma list of models, e.g. sb_resnet, resnet50:IMAGENET1K_V1 or timm:resnet18")
    r.add_argument("--datasets", help="comma list of datasets")
    r.add_argument("--n-samples", type=int, help="samples per (dataset, model)")
    r.add_argument("--batch-size", type=int, help="attribution / metric batch size")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: the suite's, usually auto)")
    r.add_argument("--seed", type=int, help="global seed")
    r.add_argument("--autocast", choices=["off", "bf16", "fp16"], help="mixed precision for metric forwards (CUDA only)")
    r.add_argument("--no-tf32", action="store_true",
                   help="full float32 convolutions / matmuls on CUDA (PyTorch lets cuDNN use TF32 by default)")
    r.add_argument("--out", help="results directory (default: runs/<suite>)")
    r.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="Python file registering extra methods/metrics (repeatable)")
    r.add_argument("--shard", metavar="K/N", help="compute only shard K of N (0-based); combine with `merge`")
    r.add_argument("--leaderboard", metavar="FILE", help="where to write the leaderboard (default: OUT/leaderboard.md)")
    r.add_argument("--no-figures", action="store_true", help="skip figures")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")

    ls = sub.add_parser("list", help="list registered methods, metrics, datasets, models or suites",
                        epilog=EXAMPLES["list"], formatter_class=_fmt("list"))
    ls.add_argument("what", choices=["methods", "metrics", "datasets", "models", "suites"])
    ls.add_argument("pattern", nargs="?", default="*", help="shell wildcard, e.g. 'grad*'")
    ls.add_argument("--plugin", action="append", default=[], metavar="FILE")

    lb = sub.add_parser("leaderboard", help="generate the leaderboard from a results directory",
                        epilog=EXAMPLES["leaderboard"], formatter_class=_fmt("leaderboard"))
    lb.add_argument("results_dir")
    lb.add_argument("-o", "--output", help="output file (default: stdout)")
    lb.add_argument("--format", choices=["md", "csv", "latex"], default="md")

    cp = sub.add_parser("compare", help="add a method and rank it against a suite's stored results",
                        epilog=EXAMPLES["compare"], formatter_class=_fmt("compare"))
    cp.add_argument("--plugin", action="append", required=True, metavar="FILE")
    cp.add_argument("--suite", default="default")
    cp.add_argument("--methods", help="which plugin methods to add (default: all it registers)")
    cp.add_argument("--baseline", help="stored results to reuse (default: results/<suite>)")
    cp.add_argument("--out", help="results directory (default: runs/compare-<suite>)")
    cp.add_argument("--device", choices=["auto", "cpu", "cuda"])
    cp.add_argument("--no-progress", action="store_true")

    cr = sub.add_parser("check-regression", help="fail when mean scores moved beyond a tolerance",
                        epilog=EXAMPLES["check-regression"], formatter_class=_fmt("check-regression"))
    cr.add_argument("new_dir")
    cr.add_argument("--baseline", default="results/default")
    cr.add_argument("--tolerance", type=float, default=1e-4, help="absolute (default 1e-4) or relative with --relative")
    cr.add_argument("--relative", action="store_true")

    ac = sub.add_parser("accept", help="make a run the committed baseline (results/<suite>) and regenerate its leaderboard",
                        epilog=EXAMPLES["accept"], formatter_class=_fmt("accept"))
    ac.add_argument("new_dir")
    ac.add_argument("--baseline", help="where the baseline lives (default: results/<suite of the run>)")
    ac.add_argument("--leaderboard", help="leaderboard to regenerate (default: leaderboard.md for the default suite, "
                    "else BASELINE/leaderboard.md)")

    mg = sub.add_parser("merge", help="merge shard result directories into one")
    mg.add_argument("out")
    mg.add_argument("shards", nargs="+")
    mg.add_argument("--leaderboard", metavar="FILE")

    tr = sub.add_parser("train", help="train a default-zoo model on the embedded dataset",
                        epilog=EXAMPLES["train"], formatter_class=_fmt("train"))
    tr.add_argument("model", help="a default-zoo model (sb_resnet, sb_vgg, sb_nibvgg) or a recipe "
                    "(nib_vgg_cifar10, nib_vgg_cifar100, resnet50_cub)")
    tr.add_argument("--root", help="data root for recipes on real data")
    tr.add_argument("--arch", help="architecture for the NIB-VGG recipes (nib_vgg13_6 .. nib_vgg16)")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", help="checkpoint path (default: the shipped checkpoint file)")
    tr.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    return p


# -- commands ----------------------------------------------------------------------------------

def _load_plugins(paths: Sequence[str]) -> list[str]:
    from saliencybench.core.registry import load_plugin

    added = []
    for path in paths:
        added += load_plugin(path)
    return added


def _parse_shard(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        env_rank, env_world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if env_rank is not None and env_world is not None and int(env_world) > 1:
            return int(env_rank), int(env_world)
        return None
    try:
        k, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like K/N (e.g. 0/4), got {spec!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise UsageError(f"--shard {spec}: need 0 <= K < N")
    return k, n


def _suite_config(args):
    from saliencybench.benchmark.config import find_suite, load_config

    path = find_suite(args.config or args.suite or "default")
    cfg = load_config(path)
    for attr, key in (("methods", "methods"), ("metrics", "metrics"), ("models", "models"), ("datasets", "datasets")):
        val = getattr(args, attr, None)
        if val:
            setattr(cfg, key, [v.strip() for v in val.split(",") if v.strip()])
    for attr in ("n_samples", "batch_size", "seed", "device", "autocast"):
        val = getattr(args, attr, None)
        if val is not None:
            if isinstance(val, int) and val < (0 if attr == "seed" else 1):
                raise UsageError(f"--{attr.replace('_', '-')} must be {'>= 0' if attr == 'seed' else '>= 1'}")
            setattr(cfg, attr, val)
    return cfg


def _finish(out: Path, cfg, leaderboard: Path | None, figures: bool) -> Path:
    from saliencybench.benchmark.report.figures import make_figures, write_leaderboard

    figs = None
    if figures:
        figs = make_figures(out, metric_bases={m: cfg.metric_base(m) for m in cfg.metric_params})
    lb = leaderboard or out / "leaderboard.md"
    return write_leaderboard(out, lb, figs)


def cmd_run(args) -> int:
    from saliencybench.benchmark.runner import Runner

    plugins = _load_plugins(args.plugin)
    cfg = _suite_config(args)
    shard = _parse_shard(args.shard)
    out = Path(args.out or f"runs/{cfg.name}")
    dist = _init_distributed(shard) if args.shard is None and shard is not None else None
    runner = Runner(cfg, out, device=_dist_device(args.device or cfg.device, dist), progress=not args.no_progress,
                    shard=shard, figures=cfg.figures and not args.no_figures, tf32=not args.no_tf32)
    if plugins:
        print(f"plugins registered: {', '.join(plugins)}", file=sys.stderr)
    manifest = runner.run()
    if dist is not None:
        dist.barrier()
        if dist.get_rank() != 0:
            return 0
        runner.shard = None
        manifest = runner.run()  # rank 0: every part exists now; merges and writes the manifest
    if shard is not None and dist is None:
        print(f"shard {shard[0]}/{shard[1]} done: {manifest['rows']} rows in {out}; "
              f"combine with `saliencybench merge OUT {out} ...`")
        return 0
    lb = _finish(out, cfg, Path(args.leaderboard) if args.leaderboard else None, cfg.figures and not args.no_figures)
    failures = manifest.get("failures", [])
    print(f"wrote {out}/scores.csv ({manifest['rows']} rows), {out}/{CURVES_FILE}, {out}/run.json and {lb} "
          f"in {manifest['timings']['total_seconds']:.1f} s "
          f"({manifest['parts']['computed']} parts computed, {manifest['parts']['reused']} reused)")
    baseline = Path("results") / cfg.name
    if (baseline / "scores.csv").is_file() and out.resolve() != baseline.resolve():
        print(f"compare with the committed baseline: saliencybench check-regression {out} --baseline {baseline}\n"
              f"make this run the baseline:          saliencybench accept {out}")
    if failures:
        print(f"{len(failures)} failure(s) recorded in the status column (see run.json):", file=sys.stderr)
        for f in failures[:10]:
            print(f"  {f}", file=sys.stderr)
    return 0


def _init_distributed(shard):
    """torchrun: ranks compute their shards into the same directory; rank 0 merges after a barrier."""
    import torch.distributed as dist

    if not dist.is_available():
        return None
    if not dist.is_initialized():
        backend = "nccl" if (os.environ.get("SALIENCYBENCH_BACKEND") == "nccl") else "gloo"
        dist.init_process_group(backend=backend)
    return dist


def _dist_device(device: str, dist) -> str:
    if dist is not None and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return f"cuda:{local % torch.cuda.device_count()}"
    return device


def cmd_list(args) -> int:
    import fnmatch

    from saliencybench.benchmark.config import list_suites, load_config
    from saliencybench.core.registry import DATASETS, METHODS, METRICS, MODELS

    _load_plugins(args.plugin)
    if args.what == "suites":
        for name, path in list_suites().items():
            if fnmatch.fnmatchcase(name, args.pattern):
                try:
                    desc = load_config(path).description
                except Exception as e:
                    desc = f"(invalid: {e})"
                print(f"{name:<28} {desc}")
        return 0
    reg = {"methods": METHODS, "metrics": METRICS, "datasets": DATASETS, "models": MODELS}[args.what]
    if args.what == "models" and _list_prefixed(MODELS, args.pattern):
        return 0
    names = reg.names(args.pattern)
    families = [p for name, p in sorted(reg.prefixes.items()) if fnmatch.fnmatchcase(f"{name}:<name>", args.pattern)]
    if not names and not families:
        print(f"no {args.what} match '{args.pattern}'", file=sys.stderr)
        return 1
    for n in names:
        meta = reg.get(n).meta
        if args.what == "methods":
            info = f"[{meta.get('family', '')}] {meta.get('paper', '')}".strip()
            desc = meta.get("description") or meta.get("description_doc", "")
        elif args.what == "metrics":
            info = ("↑ higher is better" if meta.get("higher_is_better") else "↓ lower is better")
            desc = meta.get("description", "")
        elif args.what == "models":
            acc = meta.get("accuracy")
            info = f"dataset={meta.get('dataset', '?')}" + (f" held-out accuracy={acc:.3f}" if isinstance(acc, (int, float)) else "")
            desc = meta.get("description", "")
        else:
            info = meta.get("description", "")
            desc = ""
        line = f"{n:<28} {info}"
        if desc:
            line += f" — {textwrap.shorten(desc, 90)}"
        print(line)
    for fam in families:  # one line per prefix (timm:<name>), never the thousands of names behind it
        print(f"{fam.prefix + ':<name>':<28} {fam.describe()}")
    return 0


def _list_prefixed(reg, pattern: str) -> bool:
    """``list models 'timm:resnet*'``: the names behind a prefix that match (True when printed);
    False if ``pattern`` does not start with a registered prefix."""
    prefix = reg.prefix_of(pattern)
    if prefix is None:
        return False
    fam = reg.prefixes[prefix]
    rest = pattern[len(prefix) + 1:] or "*"
    if not any(ch in rest for ch in "*?["):
        print(reg.get(pattern).name)  # a literal name: it exists, or an error with a suggestion
        return True
    if fam.names is None:
        return False
    names = fam.names(rest)
    if not names:
        raise UsageError(f"no {prefix} model matches '{rest}'")
    for n in names:
        print(f"{prefix}:{n}")
    return True


def cmd_leaderboard(args) -> int:
    from saliencybench.benchmark.report.leaderboard import render_csv, render_latex, render_markdown

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
        from saliencybench.core.io import atomic_write_text

        atomic_write_text(out, text)
        print(f"wrote {out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_compare(args) -> int:
    from saliencybench.benchmark.aggregate import ci_overlap
    from saliencybench.benchmark.config import find_suite, load_config
    from saliencybench.benchmark.report.leaderboard import build_tables
    from saliencybench.benchmark.runner import Runner

    added = [a for a in _load_plugins(args.plugin) if not a.startswith("metric:")]
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
    lb = _finish(out, cfg, out / "leaderboard.md", figures=cfg.figures)
    agg, ranks, _ = build_tables(out)
    recomputed = {m: n for m, n in manifest["attribution_calls"].items() if n and m not in new}
    print(f"computed attributions: {', '.join(f'{m}={n}' for m, n in manifest['attribution_calls'].items() if n) or 'none'}"
          f"; reused {manifest['parts']['reused']} result parts from {baseline}")
    if recomputed:
        print(f"note: recomputed existing methods (their parameters differ from the baseline): {recomputed}")
    for m in new:
        print(f"\n{m}:")
        for (ds, model, metric), g in agg.groupby(["dataset", "model", "metric"], sort=True):
            row = g[g["method"] == m]
            if row.empty:
                continue
            r = row.iloc[0]
            n_methods = g["method"].nunique()
            mine = (r["ci_low"], r["ci_high"])
            overl = [o.method for o in g.itertuples() if o.method != m and ci_overlap(mine, (o.ci_low, o.ci_high))]
            arrow = "↑" if r["higher_is_better"] else "↓"
            print(f"  {ds}/{model} {metric} {arrow}: {r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}] "
                  f"rank {int(r['rank']) if r['rank'] == r['rank'] else '-'}/{n_methods}; "
                  f"CI overlaps {len(overl)}: {', '.join(overl[:6])}{' ...' if len(overl) > 6 else ''}")
    print(f"\nleaderboard: {lb}")
    return 0


def cmd_check_regression(args) -> int:
    from saliencybench.benchmark.regression import compare_results

    rep = compare_results(Path(args.new_dir), Path(args.baseline), tolerance=args.tolerance, relative=args.relative)
    print(rep.render())
    if rep.ok:
        return 0
    print(f"\nIf these changes are intended, accept them as the new baseline with:\n"
          f"  saliencybench accept {args.new_dir} --baseline {args.baseline}")
    return 1


def cmd_accept(args) -> int:
    """Copy a run's results (scores, curves, manifest, figures) into the baseline folder and
    regenerate its leaderboard: the one command that changes the committed results."""
    from saliencybench.benchmark.report.figures import write_leaderboard
    from saliencybench.benchmark.store import read_manifest

    src = Path(args.new_dir)
    if not (src / "scores.csv").is_file():
        raise FileNotFoundError(f"{src}/scores.csv not found: is '{src}' a results directory?")
    suite = str(read_manifest(src).get("suite") or src.name)
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


def cmd_merge(args) -> int:
    from saliencybench.benchmark.report.figures import write_leaderboard
    from saliencybench.benchmark.store import ResultStore, read_manifest
    from saliencybench.core.io import write_json

    out = Path(args.out)
    store = ResultStore(out)
    manifests = []
    for s in args.shards:
        sp = Path(s)
        if not (sp / "parts").is_dir():
            raise FileNotFoundError(f"{sp}/parts not found: not a shard results directory")
        for part in (sp / "parts").rglob("*"):
            if part.is_file():
                dest = out / "parts" / part.relative_to(sp / "parts")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(part, dest)
        if (sp / "cache").is_dir():
            shutil.copytree(sp / "cache", out / "cache", dirs_exist_ok=True)
        if (sp / "run.json").is_file():
            manifests.append(read_manifest(sp))
    scores, _ = store.merge()
    if manifests:
        m = dict(manifests[0])
        m["shard"] = None
        m["merged_from"] = [str(s) for s in args.shards]
        m["rows"] = int(len(scores))
        write_json(out / "run.json", m)
    lb = write_leaderboard(out, Path(args.leaderboard) if args.leaderboard else out / "leaderboard.md")
    print(f"merged {len(args.shards)} shard(s) into {out} ({len(scores)} rows); leaderboard {lb}")
    return 0


def cmd_train(args) -> int:
    from saliencybench.core.registry import MODELS
    from saliencybench.training.recipes import RECIPES, run_recipe

    kw = {"seed": args.seed}
    if args.model in RECIPES:
        for k in ("epochs", "out", "root"):
            if getattr(args, k) is not None:
                kw[k] = getattr(args, k)
        if args.arch:
            kw["model"] = args.arch
        kw["device"] = args.device if args.device != "auto" else ("cuda" if _cuda() else "cpu")
        res = run_recipe(args.model, **kw)
        print(", ".join(f"{k}={v}" for k, v in res.items() if not isinstance(v, (list, dict))))
        return 0
    if args.model not in MODELS:
        raise UsageError(f"'{args.model}' is neither a default-zoo model nor a recipe "
                         f"({', '.join(sorted(RECIPES))})")
    from saliencybench.training.recipes import train_model

    if args.epochs is not None:
        kw["epochs"] = args.epochs
    if args.out:
        kw["out"] = args.out
    if args.device != "auto":
        kw["device"] = args.device
    else:
        import torch

        kw["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    res = train_model(args.model, **kw)
    print(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


COMMANDS = {
    "run": cmd_run, "list": cmd_list, "leaderboard": cmd_leaderboard, "compare": cmd_compare,
    "check-regression": cmd_check_regression, "accept": cmd_accept, "merge": cmd_merge, "train": cmd_train,
}


def main(argv: Sequence[str] | None = None) -> int:
    from saliencybench.core.registry import RegistryError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        import saliencybench

        print(saliencybench.__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    debug = os.environ.get("SALIENCYBENCH_DEBUG") == "1"
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished parts are saved; run the same command again to resume", file=sys.stderr)
        return 130
    except (UsageError, RegistryError) as e:
        if debug:
            raise
        print(f"saliencybench: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"saliencybench: {type(e).__name__}: {msg} (set SALIENCYBENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
