"""Plugin for interruption tests: the toy registrations plus a deliberately slow method."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy import grad_x_input, register_all  # noqa: E402

from saliencybench.benchmark.registry import METHODS, register_method  # noqa: E402

register_all()


def slow_gxi(model, x, target, **kw):
    time.sleep(0.25)
    return grad_x_input(model, x, target)


if "toy_slow" not in METHODS:
    register_method("toy_slow", family="gradient")(slow_gxi)
