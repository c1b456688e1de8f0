"""FID levels (Khayatkhoei & Elgammal, AAAI 2022): FID of high-pass filtered images at several cut-offs.

For sigma in SIGMAS (1/sigma steps by 1/8; sigma = 0 means no filtering):
  x    = uint8 image / 127.5 - 1                               in [-1, 1]
  h    = x - g_sigma * x                                        per channel; not re-normalised
  g_sigma: separable Gaussian, 51 taps (t = -25..25), weights exp(-t^2 / (2 sigma^2)) / sum,
           zero padding, output the size of the input ("SAME")
  the detector sees 127.5 (h + 1) as float (unclamped, unquantised), which for sigma = 0 is the
  uint8 image itself, so level 0 is the ordinary FID setup.
Result per level: FID(generated, real) under key `<prefix>_fc<f_c:.4f>`, with the cut-off
f_c = 1 / (2 pi sigma) cycles/pixel (0 for sigma = 0): the frequency where the low-pass response is
e^(-1/2).
"""

from __future__ import annotations

import numpy as np

from stylefreq import specmetrics
from stylefreq.specmetrics import FID_LEVELS_SIGMAS, cutoff_frequency

from . import metric_utils, plot


def draw_figure(sigmas, fids, prefix):
    fc = [cutoff_frequency(s) for s in sigmas]
    return plot.line_chart([('', fc, fids)], title=f'{prefix}: FID of high-pass images',
                           xlabel='high-pass cut-off frequency (cycles/pixel)', ylabel='FID', markers=True,
                           size=(560, 360), xlim=(0.0, max(fc) * 1.05 if max(fc) > 0 else 1.0))


def compute_fid_levels(opts, prefix, num_gen, max_real, sigmas=FID_LEVELS_SIGMAS):
    url = metric_utils.detector_url(opts, 'inception')
    detector = metric_utils.get_feature_detector(url, opts.device, opts.num_gpus, opts.rank, opts.verbose())
    results, fids = specmetrics.fid_levels(opts, detector, url, prefix, num_gen, max_real, sigmas)
    if opts.rank == 0:
        opts.figures[''] = draw_figure(sigmas, np.array(fids), prefix)
    return results
