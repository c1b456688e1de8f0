"""The pure computations of the spectral metrics (specdisc, FID levels), on image batches and arrays.

They live here, inside the plugin library, so that both stylefreq's metric registry
(`metrics/specdisc.py`, `metrics/fid_levels.py`: streams, caching, figures) and the adapters that a
patched StyleGAN2-ADA checkout registers in its own `metrics.metric_main` (`stylefreq.upstream`)
compute exactly the same numbers. This module imports only torch, numpy, scipy and stylefreq
(never the engine's `training/` or `metrics/` packages, whose names an upstream checkout shadows).
The definitions are documented in metrics/specdisc.py and metrics/fid_levels.py.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from stylefreq import spectral

# ------------------------------------------------------------------------------------------------
# specdisc.

SPECDISC_BANDS = (('low', 0.0, 1 / 8), ('mid', 1 / 8, 1 / 4), ('high', 1 / 4, float('inf')))
SPECDISC_LOG_EPS = 1e-20
SPECDISC_DEFINITION = 'specdisc-v1'     # part of cache keys: change it when the definition changes


def batch_power_sum(images):
    """uint8 [N, C, H, W] -> [1, H*W] float64: the sum over the batch of the normalised, windowed,
    DC-free power spectra (see metrics/specdisc.py)."""
    x = images.to(torch.float32) / 127.5 - 1
    gray = spectral.to_grayscale(x, weights='mean')
    P = spectral.power_spectrum(gray, window='hann', remove_dc=True, shift=True)
    H, W = P.shape[-2:]
    return (P.to(torch.float64).sum(dim=0) / (H * W)).reshape(1, -1)


def radial_db_profile(pbar):
    """Pbar [H, W] -> (frequencies [K] cycles/pixel, L [K] dB)."""
    H, W = pbar.shape
    bins = spectral.radial_bins(H, W)
    prof = spectral.radial_profile(torch.from_numpy(np.asarray(pbar)), bins=bins).numpy()
    return bins.frequencies.numpy().astype(np.float64), 10 * np.log10(prof + SPECDISC_LOG_EPS)


def band_masks(freqs):
    masks = {'all': freqs > 0}
    for name, lo, hi in SPECDISC_BANDS:
        masks[name] = (freqs > 0) & (freqs >= lo) & (freqs < hi)
    return masks


def spectral_discrepancy(pbar_real, pbar_gen):
    """{'all', 'low', 'mid', 'high', 'leakage'} from the two mean 2-D power spectra [H, W].

    Raises ValueError when the two spectra differ in size.
    """
    if pbar_real.shape != pbar_gen.shape:
        raise ValueError(f'specdisc: real images are {pbar_real.shape[1]}x{pbar_real.shape[0]}, '
                         f'generated ones {pbar_gen.shape[1]}x{pbar_gen.shape[0]}')
    freqs, Lr = radial_db_profile(pbar_real)
    _, Lg = radial_db_profile(pbar_gen)
    out = {}
    for name, mask in band_masks(freqs).items():
        out[name] = float(np.abs(Lg[mask] - Lr[mask]).mean()) if mask.any() else float('nan')
    nr = pbar_real / max(pbar_real.sum(), 1e-300)
    ng = pbar_gen / max(pbar_gen.sum(), 1e-300)
    out['leakage'] = float(0.5 * np.abs(nr - ng).sum())
    return out


# ------------------------------------------------------------------------------------------------
# FID levels.

FID_LEVELS_SIGMAS = (0.0, 8.0, 4.0, 8 / 3, 2.0, 1.6, 4 / 3, 8 / 7, 1.0)
FID_LEVELS_TAPS = 51
FID_LEVELS_DEFINITION = 'fid-levels-v1'


def cutoff_frequency(sigma) -> float:
    return 0.0 if sigma == 0 else 1.0 / (2 * math.pi * sigma)


def fid_levels_key(prefix, sigma) -> str:
    return f'{prefix}_fc{cutoff_frequency(sigma):.4f}'


def gaussian_kernel(sigma, taps=FID_LEVELS_TAPS, dtype=torch.float64):
    t = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    return (k / k.sum()).to(dtype)


def _band_matrix(n, kernel):
    """[n, n] matrix of the zero-padded "SAME" 1-D convolution with `kernel` (odd length)."""
    taps = kernel.numel()
    i = torch.arange(n, device=kernel.device)
    d = i[None, :] - i[:, None] + (taps - 1) // 2          # A[i, j] = kernel[j - i + pad]
    inside = (d >= 0) & (d < taps)
    return torch.where(inside, kernel[d.clamp(0, taps - 1)], torch.zeros((), dtype=kernel.dtype, device=kernel.device))


def gaussian_highpass(x, sigma, taps=FID_LEVELS_TAPS):
    """x - g_sigma * x for [N, C, H, W] float images (zero SAME padding, per channel); x if sigma == 0."""
    if sigma == 0:
        return x
    N, C, H, W = x.shape
    k = gaussian_kernel(sigma, taps, x.dtype).to(x.device)
    if max(H, W) <= 256:
        # Two matrix products with banded matrices: much faster than a 51-tap conv on CPU at these sizes.
        blurred = _band_matrix(H, k) @ x @ _band_matrix(W, k).T
    else:
        pad = (taps - 1) // 2
        y = x.reshape(N * C, 1, H, W)
        y = torch.nn.functional.conv2d(y, k.reshape(1, 1, taps, 1), padding=(pad, 0))
        blurred = torch.nn.functional.conv2d(y, k.reshape(1, 1, 1, taps), padding=(0, pad)).reshape(N, C, H, W)
    return x - blurred


def highpass_levels(images, sigmas=FID_LEVELS_SIGMAS):
    """uint8 RGB [N, 3, H, W] -> per sigma the float detector input 127.5 (h + 1), h = highpass(x)."""
    x = images.to(torch.float32) / 127.5 - 1
    return [(gaussian_highpass(x, s) + 1) * 127.5 for s in sigmas]


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), float64, real part of scipy's sqrtm."""
    import scipy.linalg
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    covmean = np.real(scipy.linalg.sqrtm(sigma1 @ sigma2))
    return float(np.square(mu1 - mu2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean))
