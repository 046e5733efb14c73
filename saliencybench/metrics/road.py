"""Noisy linear imputation of removed pixels, the substrate of ROAD.

Rong, Leemann, Borisov, Kasneci & Kasneci 2022 (ICML), "A Consistent and Efficient Evaluation
Strategy for Attribution Methods", Sec. 4 ("Noisy Linear Imputation"): every removed pixel takes
the weighted mean of its 8 neighbours, direct neighbours weighted 1/6 and diagonal ones 1/12 (the
weights of the authors' code and of Quantus's ``noisy_linear_imputation``), and Gaussian noise is
added to the imputed values. Neighbours that are themselves removed are unknowns too, so the
imputation is one sparse linear system per image:

    D_i u_i - sum_{j removed, j ~ i} w_ij u_j = sum_{j known, j ~ i} w_ij x_j     (i removed),

where ``D_i`` is the sum of the weights of the neighbours of ``i`` that lie inside the image (the
paper's code drops the weights of neighbours outside it). The operator is symmetric and
diagonally dominant, positive definite on every connected region of removed pixels that touches
a known pixel, so it is solved here by conjugate gradients with a Jacobi preconditioner, batched
over images and channels (one 3x3 convolution per iteration, on the input's device), instead of
one ``scipy.sparse.linalg.spsolve`` per image.

Differences from Quantus by construction: the system is solved iteratively to a relative
residual ``rtol`` (Quantus: a direct sparse solve); a removed region with no known neighbour at
all (e.g. every pixel removed) has a singular system, where Quantus's direct solve fails and this
solver leaves 0 (plus noise); the noise comes from a torch generator, drawn for every pixel and
kept on removed ones (Quantus: NumPy's global generator, removed pixels only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ROAD_WEIGHTS", "noisy_linear_impute"]

#: Rong et al. 2022, Sec. 4: direct neighbours 1/6, diagonal ones 1/12 (they sum to 1).
ROAD_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))


def _neighbour_sum(u: Tensor) -> Tensor:
    """sum_j w_ij u_j over the in-image neighbours j of every pixel i of ``u`` (N,1,H,W).

    The 3x3 weights are separable up to their centre, ``W = [1 2 1]^T [1 2 1] / 12 - e_centre / 3``,
    so the stencil is two 1-D passes over a zero-padded copy (zero padding drops the neighbours
    outside the image, as the paper's code does); 2-3x faster on the CPU than a 3x3 convolution.
    """
    q = F.pad(u, (1, 1, 1, 1))
    h = q[..., :, :-2] + q[..., :, 2:]
    h.add_(q[..., :, 1:-1], alpha=2)
    v = h[..., :-2, :] + h[..., 2:, :]
    v.add_(h[..., 1:-1, :], alpha=2)
    return v.mul_(1 / 12).sub_(u, alpha=1 / 3)


def _batch_dot(a: Tensor, b: Tensor) -> Tensor:
    return torch.linalg.vecdot(a.flatten(1), b.flatten(1))


def _ratio(num: Tensor, den: Tensor, where: Tensor) -> Tensor:
    """``num / den`` where ``where`` holds, else 0 (a converged or empty system takes no step)."""
    ok = where & (den > 0)
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))


def _initial_guess(xs: Tensor, removed: Tensor) -> Tensor:
    """A push-pull fill of the removed pixels (averages of the known ones over a pyramid of 2x2
    blocks, brought back up bilinearly): the smooth part of the solution, which conjugate
    gradients would otherwise take many iterations to build; zero on known pixels."""
    known = 1 - removed
    levels = [(xs * known, known)]
    while min(levels[-1][1].shape[-2:]) > 1:
        v, k = levels[-1]
        levels.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(k, 2, ceil_mode=True)))
    v, k = levels[-1]
    fill = v / k.clamp_min(1e-12)
    for v, k in reversed(levels[:-1]):
        up = F.interpolate(fill, size=v.shape[-2:], mode="bilinear", align_corners=False)
        fill = torch.where(k > 0, v + (1 - k) * up, up) if k is not levels[0][1] else v + (1 - k) * up
    return removed * fill


def _solve(rhs: Tensor, removed: Tensor, diag: Tensor, *, rtol: float, max_iter: int, u0: Tensor) -> Tensor:
    """Jacobi-preconditioned conjugate gradients for ``A u = rhs`` on the removed pixels, one
    system per row of the batch, ``A u = removed * (diag * u - neighbour_sum(u))`` for ``u`` zero on
    known pixels. A system whose residual is below ``rtol * |rhs|`` is done: its solution is stored
    and, once a quarter of the rows still iterating are done, the working set drops them, so a
    batch of easy and hard systems (few and many removed pixels) costs about what separate calls
    cost."""
    out = u0.clone()
    rows = torch.arange(rhs.shape[0], device=rhs.device)
    m, inv_diag, u = removed, removed / diag, u0.clone()
    r = rhs - m * (diag * u - _neighbour_sum(u))
    z = inv_diag * r
    p = z.clone()
    rz = _batch_dot(r, z)
    tol = rtol * rtol * _batch_dot(rhs, rhs)
    active = _batch_dot(r, r) > tol
    for it in range(max_iter):
        ap = (diag * p).sub_(_neighbour_sum(p)).mul_(m)
        alpha = _ratio(rz, _batch_dot(p, ap), active).view(-1, 1, 1, 1)
        u.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        if it % 4 == 3:
            active = active & (_batch_dot(r, r) > tol)
            if not bool(active.any()):
                break
            n_done = int((~active).sum())
            if 4 * n_done >= active.numel():  # drop the finished systems from the working set
                out[rows[~active]] = u[~active]
                keep = active.nonzero().flatten()
                rows, m, inv_diag, u, r, p, rz, tol = (t[keep] for t in (rows, m, inv_diag, u, r, p, rz, tol))
                z, active = torch.empty_like(r), active[keep]
        torch.mul(inv_diag, r, out=z)
        rz_new = _batch_dot(r, z)
        p.mul_(_ratio(rz_new, rz, active).view(-1, 1, 1, 1)).add_(z)
        rz = rz_new
    out[rows] = u
    return out


def noisy_linear_impute(
    x: Tensor,
    removed: Tensor,
    *,
    noise_std: float = 0.01,
    generator: torch.Generator | None = None,
    rtol: float = 1e-5,
    max_iter: int | None = None,
) -> Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022, Sec. 4), batched on ``x.device``.

    Args:
        x: (B,C,H,W) images (any value space: the imputation is linear, the noise is in the units
            of ``x``).
        removed: (B,1,H,W) or (B,H,W) bool, True where a pixel is removed (all channels).
        noise_std: standard deviation of the Gaussian noise added to the imputed pixels (0.01 in
            the paper's code and Quantus).
        generator: torch generator of the noise (on any device); None uses the global one.
        rtol: the solver stops when every system's residual is below ``rtol`` times its
            right-hand side (2-norm).
        max_iter: bound on the conjugate-gradient iterations (default ``4 (H + W) + 64``).

    Returns:
        A new (B,C,H,W) tensor of ``x``'s dtype and device: known pixels are ``x``, removed ones
        the solution of the linear system plus noise.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (B,C,H,W), got shape {tuple(x.shape)}")
    mask = removed.unsqueeze(1) if removed.ndim == 3 else removed
    if mask.shape != (x.shape[0], 1, *x.shape[2:]):
        raise ValueError(f"removed must be (B,1,H,W) for x of shape {tuple(x.shape)}, got {tuple(removed.shape)}")
    b, c, h, w = x.shape
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    m = mask.to(device=x.device, dtype=dtype).repeat_interleave(c, dim=0)
    xs = x.to(dtype).reshape(b * c, 1, h, w)
    diag = _neighbour_sum(torch.ones(1, 1, h, w, dtype=dtype, device=x.device))
    rhs = m * _neighbour_sum((1 - m) * xs)
    u = _solve(rhs, m, diag, rtol=rtol, max_iter=max_iter if max_iter is not None else 4 * (h + w) + 64,
               u0=_initial_guess(xs, m))
    out = xs * (1 - m) + u
    if noise_std:
        gen_device = generator.device if generator is not None else x.device
        noise = torch.randn(b * c, 1, h, w, generator=generator, dtype=dtype, device=gen_device)
        out = out + m * noise.to(x.device) * noise_std
    return out.reshape(b, c, h, w).to(x.dtype)
