"""Image quality of protected images against their originals: PSNR, SSIM and the L-inf distance (numpy/scipy).

SSIM is Wang et al. (IEEE TIP 2004): an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 255,
computed per channel on uint8 values and averaged over channels and over the window positions that lie fully
inside the image (the usual border crop). PSNR is 10 log10(255^2 / MSE) per image; an image identical to its
original has infinite PSNR and is counted separately rather than averaged.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

_SIGMA = 1.5
_RADIUS = 5            # 11x11 window
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of the same shape (inf when identical)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two uint8 HxW or HxWxC images (channels averaged)."""
    from scipy.ndimage import gaussian_filter

    x, y = a.astype(np.float64), b.astype(np.float64)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    vals = []
    for c in range(x.shape[-1]):
        xc, yc = x[..., c], y[..., c]

        def blur(z):
            return gaussian_filter(z, _SIGMA, truncate=_RADIUS / _SIGMA, mode="reflect")

        mx, my = blur(xc), blur(yc)
        sxx, syy, sxy = blur(xc * xc) - mx * mx, blur(yc * yc) - my * my, blur(xc * yc) - mx * my
        s = ((2 * mx * my + _C1) * (2 * sxy + _C2)) / ((mx * mx + my * my + _C1) * (sxx + syy + _C2))
        r = _RADIUS if min(s.shape) > 2 * _RADIUS else 0
        vals.append(s[r:s.shape[0] - r, r:s.shape[1] - r].mean())
    return float(np.mean(vals))


def compare(protected: Iterable[np.ndarray], original: Iterable[np.ndarray]) -> dict:
    """Summary over pairs of uint8 images: PSNR/SSIM mean and min, max L-inf distance (in 1/255 steps)."""
    psnrs, ssims, linf, n, shapes = [], [], 0, 0, set()
    for p, o in zip(protected, original, strict=True):
        if p.shape != o.shape:
            raise ValueError(f"image {n}: protected shape {p.shape} differs from the original's {o.shape}")
        psnrs.append(psnr(p, o))
        ssims.append(ssim(p, o))
        linf = max(linf, int(np.abs(p.astype(np.int16) - o.astype(np.int16)).max(initial=0)))
        shapes.add(p.shape)
        n += 1
    finite = [v for v in psnrs if np.isfinite(v)]
    return {"rows": n, "changed_rows": len(finite), "psnr_mean": float(np.mean(finite)) if finite else float("inf"),
            "psnr_min": float(min(finite)) if finite else float("inf"), "identical_rows": n - len(finite),
            "ssim_mean": float(np.mean(ssims)) if ssims else 1.0, "ssim_min": float(min(ssims)) if ssims else 1.0,
            "linf_255": linf}
