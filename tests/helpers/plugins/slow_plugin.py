"""Plugin for interruption tests: the toy registrations plus a gated method.

``toy_slow`` is ``toy_gxi`` that, when ``SB_TEST_GATE`` names a folder, announces each call
there (``waiting-<k>``) and waits until the test allows it (``go-<k>``). The test thus holds the
run at a known point, with every file written before that point in place, and signals it
there: no race with a run that would otherwise finish first on a fast or idle machine.
Without the variable the method runs straight through (the reference and resumed runs).
"""

import os
import time
from pathlib import Path

from helpers.toy import grad_x_input, register_all
from saliencybench.core.registry import METHODS, register_method

register_all()
_calls = 0


def gated_gxi(model, x, target, **kw):
    global _calls
    gate = os.environ.get("SB_TEST_GATE")
    if gate:
        _calls += 1
        Path(gate, f"waiting-{_calls}").touch()
        while not Path(gate, f"go-{_calls}").exists():  # released by the test, or signalled
            time.sleep(0.01)
    return grad_x_input(model, x, target)


if "toy_slow" not in METHODS:
    register_method("toy_slow", family="gradient")(gated_gxi)
