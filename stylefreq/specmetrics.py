"""The spectral metrics, specdisc and FID levels, computed over metric streams.

Both stylefreq's metric registry (metrics/specdisc.py, metrics/fid_levels.py add names and
figures) and the metrics a patched StyleGAN2-ADA checkout registers (stylefreq.upstream) call these
functions, on the same streams (stylefreq.metric_streams), so both give the same numbers for the
same images. The definitions are in the README ("Metrics").
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from stylefreq import metric_streams, spectral
from stylefreq.feature_stats import FeatureStats

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


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), float64, real part of scipy's sqrtm."""
    import scipy.linalg
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    covmean = np.real(scipy.linalg.sqrtm(sigma1 @ sigma2))
    return float(np.square(mu1 - mu2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean))


def frechet_from_stats(stats_a, stats_b) -> float:
    """Fréchet distance of the Gaussian fits of two FeatureStats (captured with mean and covariance)."""
    mu_a, sigma_a = stats_a.get_mean_cov()
    mu_b, sigma_b = stats_b.get_mean_cov()
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


# ------------------------------------------------------------------------------------------------
# Over streams.

def mean_power_spectrum(opts, stream, cached=False):
    """Pbar [H, W] (float64 numpy) of a stream of images; a dataset stream through the cache."""
    make = lambda: {'power_sum': FeatureStats(capture_mean=True)}           # noqa: E731
    process = lambda images: {'power_sum': batch_power_sum(images)}         # noqa: E731
    if cached:
        stats = metric_streams.cached_dataset_stats(opts, stream, process, make, 'power-spectrum',
                                                    dict(definition=SPECDISC_DEFINITION), tag='dataset spectra')
    else:
        stats = metric_streams.accumulate_stream(opts, stream, process, make, tag='generator spectra')
    total = stats['power_sum']
    if total.num_features is None or stream.num_items == 0:
        raise metric_streams.MetricError('specdisc: no images')
    _c, H, W = stream.image_shape
    return (total.raw_mean / stream.num_items).reshape(H, W)    # raw_mean holds the sum of the batch sums


def specdisc(opts, prefix, num_gen, max_real):
    """(results {prefix_all|low|mid|high|leakage: value}, Pbar real, Pbar generated)."""
    real_stream = metric_streams.DatasetStream(opts, opts.dataset_kwargs, max_items=max_real, tag='dataset spectra')
    pbar_real = mean_power_spectrum(opts, real_stream, cached=True)
    pbar_gen = mean_power_spectrum(opts, metric_streams.generated_stream(opts, num_gen, tag='generator spectra'))
    try:
        bands = spectral_discrepancy(pbar_real, pbar_gen)
    except ValueError as err:
        raise metric_streams.MetricError(str(err)) from None
    return {f'{prefix}_{k}': v for k, v in bands.items()}, pbar_real, pbar_gen


def fid_levels(opts, detector, detector_key, prefix, num_gen, max_real, sigmas=FID_LEVELS_SIGMAS):
    """({result key per level: FID}, [FID per sigma]) with a loaded Inception `detector`;
    `detector_key` (its URL) names it in the cache key."""
    def process(images):
        x = metric_streams.to_rgb(images).to(torch.float32) / 127.5 - 1
        return {f'level{i}': detector((gaussian_highpass(x, s) + 1) * 127.5, return_features=True)
                for i, s in enumerate(sigmas)}

    make = lambda: {f'level{i}': FeatureStats(capture_mean_cov=True) for i in range(len(sigmas))}   # noqa: E731
    real_stream = metric_streams.DatasetStream(opts, opts.dataset_kwargs, max_items=max_real, tag='dataset levels')
    key = dict(definition=FID_LEVELS_DEFINITION, detector_url=str(detector_key), sigmas=[float(s) for s in sigmas],
               taps=FID_LEVELS_TAPS)
    name = os.path.splitext(os.path.basename(str(detector_key).rstrip('/').split('?')[0]))[0] or 'detector'
    real = metric_streams.cached_dataset_stats(opts, real_stream, process, make, name + '-levels', key)
    gen = metric_streams.accumulate_stream(opts, metric_streams.generated_stream(opts, num_gen, tag='generator levels'),
                                           process, make)
    fids = [frechet_from_stats(gen[f'level{i}'], real[f'level{i}']) for i in range(len(sigmas))]
    return {fid_levels_key(prefix, s): f for s, f in zip(sigmas, fids)}, fids
