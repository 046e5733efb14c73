"""The speed ratios of issue 18 in one table: ``python benchmarks/proxies.py [--device cuda] [--quick]``.

Every ratio is measured side by side in one process: the two sides run interleaved, ``--reps``
times each (after one warm-up call), and the table gives the median of each side. Rows:

- ``lrp_resnet`` (the registered method through ``saliencybench.attribute``, post-processing
  included) against a bare input gradient (``x.requires_grad_(); model(x)[rows, t].sum()``
  differentiated with ``torch.autograd.grad``), random-init torchvision ResNet50 in eval mode,
  at batch 1 / 64x64 and batch 8 / 224x224; with the number of aten operations of one call
  of each (``torch.profiler``, every ``aten::`` event, nested ones included);
- RISE (4 images, ``n_masks`` each, internal batches of 256) against plain forward passes of
  the same number of images in batches of 256, channels-last on CPU, no autograd (as
  ``benchmarks/bench_methods.py``), random-init ResNet18 with 10 classes at 64x64: images/s;
- the perturbation-curve engine (insertion + deletion + LeRF + MoRF of one group, forwards in
  batches of 256) against plain forward passes in batches of 256, inference mode (as
  ``benchmarks/bench_perturbation.py``), ResNet18 with 10 classes, 48x48 on CPU, 112x112 on
  CUDA: images/s.

``--default-run DIR --default-wall S`` adds the default suite's wall time against the time in
its runner (``run.json``), as ``.ci/gpu-checks`` does after its ``default`` part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile

import saliencybench as sb
from saliencybench.core.registry import METRICS
from saliencybench.core.tensors import fast_layout
from saliencybench.core.types import IDENTITY_NORMALIZATION, Batch, EvalContext


@dataclass(frozen=True)
class Options:
    """What a proxy run measures and how often."""

    device: str = "cpu"
    reps: int = 5
    rise_masks: int = 256
    quick: bool = False


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def side_by_side(fns: dict[str, Callable[[], Any]], reps: int, device: str) -> dict[str, float]:
    """Median seconds of each function, the functions interleaved (one warm-up call each)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    sync(device)
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def aten_ops(fn: Callable[[], Any]) -> int:
    """Number of aten operations one call of ``fn`` runs (nested ones included)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::"))


def input_gradient(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The plain input gradient of the target logits (the issue's comparison)."""
    xx = x.detach().requires_grad_(True)
    out = model(xx)[torch.arange(len(t), device=x.device), t].sum()
    (g,) = torch.autograd.grad(out, xx)
    return g


def lrp_rows(opts: Options) -> list[dict[str, Any]]:
    """``lrp_resnet`` vs the input gradient on ResNet50, batch 1 / 64 and batch 8 / 224."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval().to(opts.device)
    rows = []
    for b, side in ((1, 64), (8, 224)):
        x = torch.randn(b, 3, side, side, generator=torch.Generator().manual_seed(1)).to(opts.device)
        t = torch.arange(b, device=opts.device)
        fns = {"gradient": lambda: input_gradient(model, x, t),
               "lrp_resnet": lambda: sb.attribute("lrp_resnet", model, x, t)}
        sec = side_by_side(fns, max(1, opts.reps // 2) if side > 64 and opts.quick else opts.reps, opts.device)
        ops = {k: aten_ops(f) for k, f in fns.items()}
        rows.append(dict(name=f"lrp_resnet / input gradient, ResNet50 b{b} {side}x{side}", value=sec["lrp_resnet"]
                         / sec["gradient"], goal="<= 1.3", unit="x time",
                         detail=f"{sec['lrp_resnet'] * 1e3:.1f} vs {sec['gradient'] * 1e3:.1f} ms"))
        rows.append(dict(name=f"  aten ops lrp_resnet / gradient, b{b} {side}x{side}",
                         value=ops["lrp_resnet"] / ops["gradient"], goal="<= 1.5", unit="x ops",
                         detail=f"{ops['lrp_resnet']} vs {ops['gradient']} ops"))
    return rows


def resnet18_10(device: str) -> torch.nn.Module:
    """Random-init torchvision ResNet18 with 10 classes (seed 0), as the existing benchmarks use."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval().to(device)


def plain_forward(model: torch.nn.Module, x: torch.Tensor, n_images: int, batch: int) -> Callable[[], None]:
    """Forward passes alone over ``n_images`` copies of ``x`` in batches of ``batch`` (channels-last
    on CPU, inference mode)."""
    xb = fast_layout(x.repeat(-(-batch // len(x)), 1, 1, 1)[:batch])

    @torch.inference_mode()
    def run() -> None:
        for _ in range(max(1, n_images // batch)):
            model(xb)

    return run


def rise_row(opts: Options) -> dict[str, Any]:
    """RISE images/s against plain forward images/s at batch 256 (ResNet18, 64x64)."""
    model = resnet18_10(opts.device)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(opts.device)
    t = torch.arange(4, device=opts.device)
    n = x.shape[0] * opts.rise_masks
    fns = {"rise": lambda: sb.attribute("rise", model, x, t, n_masks=opts.rise_masks),
           "forward": plain_forward(model, x, n, 256)}
    sec = side_by_side(fns, opts.reps, opts.device)
    return dict(name="RISE images/s / plain forward images/s, batch 256", value=sec["forward"] / sec["rise"],
                goal=">= 0.95", unit="x rate", detail=f"{n / sec['rise']:.0f} vs {n / sec['forward']:.0f} images/s")


def engine_row(opts: Options) -> dict[str, Any]:
    """The curve engine's images/s (four curves, batches of 256) against plain forward at 256."""
    model = resnet18_10(opts.device)
    n, side = (32, 112) if opts.device == "cuda" else (4, 48)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, side, side, generator=g).to(opts.device)
    y = (torch.arange(n) % 10).to(opts.device)
    a = torch.randn(n, 1, side, side, generator=g).to(opts.device)
    names = ["insertion", "deletion", "lerf", "morf"]
    metrics = [METRICS.get(k).obj(name=k, kind=k, preset="none", substrate="black", pixels_per_step=side * side // 32,
                                  grid="inclusive", ties="stable") for k in names]
    counter: dict[str, int] = {}

    def engine() -> None:
        ctx = EvalContext(model=model, batch=Batch(x, y, [str(i) for i in range(n)]), target=y,
                          normalization=IDENTITY_NORMALIZATION, num_classes=10, max_batch=256)
        type(metrics[0]).evaluate_group(metrics, ctx, a)
        counter.update(ctx.forward_counter)

    engine()
    images = sum(counter.values())
    sec = side_by_side({"engine": engine, "forward": plain_forward(model, x, images, 256)}, opts.reps, opts.device)
    return dict(name=f"engine images/s / plain forward images/s, batch 256 ({side}x{side})",
                value=sec["forward"] / sec["engine"], goal=">= 0.95", unit="x rate",
                detail=f"{images / sec['engine']:.0f} vs {images / sec['forward']:.0f} images/s ({images} images)")


def suite_row(run_dir: str, wall: float) -> dict[str, Any]:
    """The default suite's wall time against the time spent in its runner (``run.json``)."""
    total = json.loads((Path(run_dir) / "run.json").read_text())["timings"]["total_seconds"]
    return dict(name="default suite wall / time in the runner", value=wall / total, goal="<= 1.5",
                unit="x time", detail=f"{wall:.1f} s vs {total:.1f} s")


def table(rows: list[dict[str, Any]], opts: Options) -> str:
    dev = torch.cuda.get_device_name() if opts.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    lines = [f"speed proxies on {dev} (torch {torch.__version__}), median of {opts.reps} interleaved repetitions", "",
             f"| {'ratio':66s} | {'value':>7s} | {'goal':8s} | detail |", f"|{'-' * 68}|{'-' * 9}|{'-' * 10}|---|"]
    for r in rows:
        lines.append(f"| {r['name']:66s} | {r['value']:7.2f} | {r['goal']:8s} | {r['unit']}: {r['detail']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer masks and repetitions (a dry run of the code)")
    ap.add_argument("--only", nargs="*", default=["lrp", "rise", "engine"], choices=["lrp", "rise", "engine"])
    ap.add_argument("--default-run", help="a default-suite run directory (its run.json)")
    ap.add_argument("--default-wall", type=float, help="the wall seconds of that run")
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args(argv)
    opts = Options(device=a.device, reps=2 if a.quick else a.reps, rise_masks=64 if a.quick else 256, quick=a.quick)
    if opts.device == "cpu":
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    parts = {"lrp": lrp_rows, "rise": lambda o: [rise_row(o)], "engine": lambda o: [engine_row(o)]}
    rows = [r for p in a.only for r in parts[p](opts)]
    if a.default_run and a.default_wall:
        rows.append(suite_row(a.default_run, a.default_wall))
    print(table(rows, opts))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
