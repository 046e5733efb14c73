"""The argument parser of ``saliencybench``: a declarative table of commands and flags."""

from __future__ import annotations

import argparse
import sys

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
  saliencybench train nib_vgg_cifar10 --arch nib_vgg16 --root ~/data/cifar --device cuda   # Lee & Chang (MIA) recipe
  saliencybench train resnet50_cub --root ~/data/CUB_200_2011 --device cuda  # Otsuki et al. 2024 supp. Tab. A
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
    r.add_argument("--autocast", choices=["off", "bf16", "fp16"],
                   help="mixed precision for metric forwards (CUDA only)")
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

    ac = sub.add_parser("accept", help="make a run the committed baseline (results/<suite>) and regenerate its "
                        "leaderboard",
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
