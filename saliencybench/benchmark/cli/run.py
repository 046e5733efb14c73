"""``saliencybench run``: a suite into a results directory (single process, shard, torchrun)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from saliencybench.benchmark.results import CURVES_FILE
from saliencybench.core.errors import UsageError


def load_plugins(paths: Sequence[str]) -> list[str]:
    """Register the methods / metrics of each ``--plugin`` file; the names they added."""
    from saliencybench.core.registry import load_plugin

    added = []
    for path in paths:
        added += load_plugin(path)
    return added


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``--shard K/N``, else torchrun's ``RANK`` / ``WORLD_SIZE`` when there is more than one."""
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


def suite_config(args: argparse.Namespace) -> Any:
    """The suite of ``--suite`` / ``--config`` with the command line's overrides."""
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


def finish(out: Path, cfg: Any, leaderboard: Path | None, figures: bool) -> Path:
    """Figures (unless ``figures`` is False) and the leaderboard of a finished run."""
    from saliencybench.benchmark.report.figures import make_figures, write_leaderboard

    figs = None
    if figures:
        figs = make_figures(out, metric_bases={m: cfg.metric_base(m) for m in cfg.metric_params})
    lb = leaderboard or out / "leaderboard.md"
    return write_leaderboard(out, lb, figs)


def cmd_run(args: argparse.Namespace) -> int:
    from saliencybench.benchmark.runner import Runner

    plugins = load_plugins(args.plugin)
    cfg = suite_config(args)
    shard = parse_shard(args.shard)
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
    lb = finish(out, cfg, Path(args.leaderboard) if args.leaderboard else None, cfg.figures and not args.no_figures)
    _summary(out, cfg.name, lb, manifest)
    return 0


def _summary(out: Path, suite: str, lb: Path, manifest: dict[str, Any]) -> None:
    print(f"wrote {out}/scores.csv ({manifest['rows']} rows), {out}/{CURVES_FILE}, {out}/run.json and {lb} "
          f"in {manifest['timings']['total_seconds']:.1f} s "
          f"({manifest['parts']['computed']} parts computed, {manifest['parts']['reused']} reused)")
    baseline = Path("results") / suite
    if (baseline / "scores.csv").is_file() and out.resolve() != baseline.resolve():
        print(f"compare with the committed baseline: saliencybench check-regression {out} --baseline {baseline}\n"
              f"make this run the baseline:          saliencybench accept {out}")
    failures = manifest.get("failures", [])
    if failures:
        print(f"{len(failures)} failure(s) recorded in the status column (see run.json):", file=sys.stderr)
        for f in failures[:10]:
            print(f"  {f}", file=sys.stderr)


def _init_distributed(shard: tuple[int, int] | None) -> Any:
    """torchrun: ranks compute their shards into the same directory; rank 0 merges after a barrier."""
    import torch.distributed as dist

    if not dist.is_available():
        return None
    if not dist.is_initialized():
        backend = "nccl" if (os.environ.get("SALIENCYBENCH_BACKEND") == "nccl") else "gloo"
        dist.init_process_group(backend=backend)
    return dist


def _dist_device(device: str, dist: Any) -> str:
    if dist is not None and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            return f"cuda:{local % torch.cuda.device_count()}"
    return device
