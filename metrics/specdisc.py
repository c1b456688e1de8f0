"""specdisc: spectral discrepancy between generated and real images (README "Metrics" is the spec).

For a set of images (uint8, mapped to [-1, 1] by x / 127.5 - 1):
  g_i  = channel mean of image i                                    [H, W]
  P_i  = |FFT2(hann * (g_i - mean(g_i)))|^2 / (H W), DC at (H//2, W//2)
  Pbar = mean_i P_i                                                 the mean 2-D power spectrum
  p[k] = mean of Pbar over radial bin k (pixels with floor(|(u,v) - centre|) = k),
         bin frequency f_k = k / max(H, W) cycles/pixel
  L[k] = 10 log10(p[k] + 1e-20)                                     the radial profile in dB
Distances between generated (g) and real (r), in dB:
  D_S  = mean over bins k in S of |L_g[k] - L_r[k]|
  all:  f_k > 0;  low: 0 < f_k < 1/8;  mid: 1/8 <= f_k < 1/4;  high: f_k >= 1/4 (to sqrt(2)/2)
Leakage (total variation between the normalised 2-D spectra, in [0, 1]):
  TV   = 1/2 sum_{u,v} | Pbar_r / sum Pbar_r - Pbar_g / sum Pbar_g |
"""

from __future__ import annotations

import numpy as np

from stylefreq import specmetrics
from stylefreq.specmetrics import SPECDISC_BANDS, radial_db_profile

from . import plot


def draw_figure(pbar_real, pbar_gen, results, prefix):
    """Radial profiles and their difference (top), the mean 2-D log spectra and |difference| (bottom)."""
    freqs, Lr = radial_db_profile(pbar_real)
    _, Lg = radial_db_profile(pbar_gen)
    keep = freqs > 0
    f, Lr, Lg = freqs[keep], Lr[keep], Lg[keep]
    edges = [hi for _n, _lo, hi in SPECDISC_BANDS if np.isfinite(hi)]
    H, W = pbar_real.shape
    profiles = plot.line_chart([('real', f, Lr), ('generated', f, Lg)], title='mean power spectrum, radial profile',
                               xlabel='frequency (cycles/pixel)', ylabel='power (dB)', vlines=edges)
    bands = ', '.join(f'{k} {results[f"{prefix}_{k}"]:.2f}' for k in ('all', 'low', 'mid', 'high'))
    diff = plot.line_chart([('', f, Lg - Lr)], title=f'generated - real (dB); |diff| {bands}',
                           xlabel='frequency (cycles/pixel)', ylabel='difference (dB)', vlines=edges, hline=0.0,
                           size=(560, 320))
    # 2-D spectra in dB relative to the real spectrum's maximum, floored at -130 dB.
    ref = max(pbar_real.max(), 1e-300)
    db_r = np.maximum(10 * np.log10(np.maximum(pbar_real / ref, 1e-30)), -130)
    db_g = np.maximum(10 * np.log10(np.maximum(pbar_gen / ref, 1e-30)), -130)
    lo = float(min(db_r.min(), db_g.min()))
    size = 256 if max(H, W) <= 256 else max(H, W)
    real_map = plot.heatmap(db_r, title=f'real: mean power (dB re max), {W}x{H}', vmin=lo, vmax=0, size=size)
    gen_map = plot.heatmap(db_g, title='generated: mean power (dB re real max)', vmin=lo, vmax=0, size=size)
    diff_map = plot.heatmap(np.abs(db_g - db_r), title=f'|generated - real| (dB); leakage '
                            f'{results[f"{prefix}_leakage"]:.4f}', vmin=0, size=size)
    return plot.grid([[profiles, diff], [real_map, gen_map, diff_map]])


def compute_specdisc(opts, prefix, num_gen, max_real):
    results, pbar_real, pbar_gen = specmetrics.specdisc(opts, prefix, num_gen, max_real)
    if opts.rank == 0:
        opts.figures[''] = draw_figure(pbar_real, pbar_gen, results, prefix)
    return results
