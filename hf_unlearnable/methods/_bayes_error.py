"""The Bayes-error estimator bayes optimises (methods.md §1.3-§1.4): a leave-one-out Nadaraya-Watson posterior with
an RBF kernel on surrogate features.

Pitfalls handled: the estimate is computed in the log domain with a max shift, so distant points do not underflow
(§6.11: with the authors' `exp` + 1e-8 an isolated point counts as error 1); value and gradient are both of the
*mean* (§6.10); rows are processed in chunks, so memory is O(chunk x N), never O(N^2) (§6.12). The value and its
gradient come from the same sweep (closed form, no autograd re-run), and log-weights more than 50 below a row's
nearest neighbour are floored there, which changes no sum in fp32 and keeps `exp` off the CPU's slow subnormal path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ProtectionError


def _chunk_weights(z_rows: torch.Tensor, z: torch.Tensor, rows: torch.Tensor, sigma: float) -> torch.Tensor:
    """Leave-one-out kernel weights [chunk, N] of the rows `rows` of z (z_rows = z[rows]) against all rows, each row
    scaled by a constant (its largest weight is 1; the self weight is 0). Built in place: the [chunk, N] buffers
    are the estimator's memory and most of its time."""
    w = torch.addmm(z.pow(2).sum(1)[None, :], z_rows, z.T, alpha=-2).add_(z_rows.pow(2).sum(1, keepdim=True))
    w.clamp_min_(0).mul_(-1 / (2 * sigma * sigma))
    diagonal = (torch.arange(len(rows), device=z.device), rows)
    w[diagonal] = float("-inf")
    # Shift by the row max (a constant per row: the posterior does not change), so the nearest neighbour has
    # weight exactly 1 and nothing underflows to an all-zero row. Weights below e^-50 of it count as e^-50: that is
    # invisible in any sum of weights (fp32 resolves 1e-7) and keeps exp and the products after it off the CPU's
    # slow path for subnormal numbers (40x slower).
    w.sub_(w.max(1, keepdim=True).values).clamp_min_(_LOG_WEIGHT_FLOOR).exp_()
    w[diagonal] = 0
    return w


_LOG_WEIGHT_FLOOR = -50.0


class _BayesErrorFn(torch.autograd.Function):
    """Mean leave-one-out error, chunk by chunk, so no N x N matrix is ever held.

    When z needs a gradient, forward computes it in the same sweep, in closed form (methods.md §1.3, y-hat held
    fixed as the max's sub-gradient): with e_i = 1 - p_{y-hat_i}(i), de_i/dw_ij = -(1[y_j = y-hat_i] - p_{y-hat_i}(i))
    / sum_j w_ij, and through w_ij = exp(-d2_ij / (2 sigma^2)) to z_i and z_j. One pass over the N x N weights
    instead of a forward pass and an autograd re-run in backward."""

    @staticmethod
    def forward(ctx, z, onehot, sigma, chunk_size):
        n = len(z)
        want_grad = ctx.needs_input_grad[0]
        grad = torch.zeros_like(z) if want_grad else None
        total = z.new_zeros(())
        with torch.no_grad():
            for s in range(0, n, chunk_size):
                rows = torch.arange(s, min(s + chunk_size, n), device=z.device)
                w = _chunk_weights(z[rows], z, rows, sigma)
                num = w @ onehot
                total_w = num.sum(1)                   # = w.sum(1): every row of onehot sums to 1
                top, y_hat = (num / total_w[:, None]).max(1)
                total += (1 - top).sum()
                if want_grad:
                    # dE/d(d2_ij) for E = mean_i e_i:
                    #   w_ij (1[y_j = y-hat_i] - p_{y-hat_i}(i)) / (sum_j w_ij 2 sigma^2 n)
                    scale = 1 / (total_w * (2 * sigma * sigma * n))
                    g = onehot[:, y_hat].T.mul_(scale[:, None]).sub_((top * scale)[:, None]).mul_(w)
                    # d(d2_ij)/dz_i = 2 (z_i - z_j), d(d2_ij)/dz_j = 2 (z_j - z_i)
                    grad[rows] += 2 * (g.sum(1, keepdim=True) * z[rows] - g @ z)
                    grad += 2 * (g.sum(0)[:, None] * z - g.T @ z[rows])
        ctx.save_for_backward(grad)
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None


def bayes_error(z: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, *, sigma: float = 0.3,
                chunk_size: int = 512) -> torch.Tensor:
    """Kernel estimate of the Bayes error of the labelled points z [N, D] (methods.md §1.3), differentiable in z.

    p_k(i) = sum_{j != i} s_ij 1[y_j = k] / sum_{j != i} s_ij with s_ij = exp(-|z_i - z_j|^2 / (2 sigma^2));
    returns mean_i (1 - max_k p_k(i)). Well-separated classes give ~0; classes with identical distributions give
    ~1 - 1/K (balanced). `sigma` = 0.3 is meant for features scaled to [-1, 1] (see `feature_scale`).
    """
    if z.ndim != 2:
        raise ProtectionError(f"bayes_error expects features of shape [N, D], got {tuple(z.shape)}.")
    if len(z) < 2:
        raise ProtectionError("bayes_error needs at least two points (it is a leave-one-out estimate).")
    check_sigma(sigma)
    labels = torch.as_tensor(labels, device=z.device).long()
    k = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    onehot = F.one_hot(labels, k).to(z.dtype)
    return _BayesErrorFn.apply(z, onehot, float(sigma), int(chunk_size))


SIGMA_RANGE = (1e-3, 1e3)


def check_sigma(sigma) -> None:
    """The kernel width, in a range where 1 / (2 sigma^2) and the weights stay ordinary floats."""
    lo, hi = SIGMA_RANGE
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not lo <= sigma <= hi:
        raise ProtectionError(f"sigma={sigma!r} must be a number from {lo:g} to {hi:g} (the kernel width on features "
                              "scaled to [-1, 1]; default 0.3).")


def feature_scale(features: torch.Tensor) -> torch.Tensor:
    """Global max-abs of a feature matrix (§1.4), used as a fixed divisor so features lie in [-1, 1]."""
    return features.detach().abs().max().clamp_min(1e-12)
