"""A complete example of adding your own attribution method to saliencybench.

    saliencybench compare --plugin examples/my_method.py --suite default

computes only this method, reuses every stored result of the suite's other methods, and
prints where it ranks on each metric with the CI overlap.
"""

import torch

from saliencybench import register_method


@register_method(
    "my_gradient_squared",
    family="plugin",
    paper="your paper here",
    postprocess=("sum",),  # channel sum to a (B,1,H,W) map; see saliencybench.attributions.postprocess
    description="squared input gradient of the target logit",
)
def my_gradient_squared(model, x, target, **kw):
    """Contract: batched (B,C,H,W) normalised input, (B,) targets -> (B,C,H,W) map on x.device.

    Leave the model as you found it (no hooks left, no requires_grad changes); the benchmark
    checks that after every call.
    """
    x = x.clone().requires_grad_(True)
    logits = model(x)
    score = logits.gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad**2
