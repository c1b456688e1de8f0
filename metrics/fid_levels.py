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
import torch

from stylefreq.specmetrics import FID_LEVELS_DEFINITION as DEFINITION  # noqa: F401 (the computations live in stylefreq)
from stylefreq.specmetrics import FID_LEVELS_SIGMAS as SIGMAS, FID_LEVELS_TAPS as TAPS
from stylefreq.specmetrics import _band_matrix, cutoff_frequency, gaussian_highpass, gaussian_kernel  # noqa: F401
from stylefreq.specmetrics import fid_levels_key as result_key

from . import frechet, metric_utils, plot


def _levels_process(detector, sigmas):
    def process(images):
        x = metric_utils.to_rgb(images).to(torch.float32) / 127.5 - 1
        out = {}
        for i, sigma in enumerate(sigmas):
            h = gaussian_highpass(x, sigma)
            out[f'level{i}'] = detector((h + 1) * 127.5, return_features=True)
        return out
    return process


def draw_figure(sigmas, fids, prefix):
    fc = [cutoff_frequency(s) for s in sigmas]
    return plot.line_chart([('', fc, fids)], title=f'{prefix}: FID of high-pass images',
                           xlabel='high-pass cut-off frequency (cycles/pixel)', ylabel='FID', markers=True,
                           size=(560, 360), xlim=(0.0, max(fc) * 1.05 if max(fc) > 0 else 1.0))


def compute_fid_levels(opts, prefix, num_gen, max_real, sigmas=SIGMAS):
    url = metric_utils.detector_url(opts, 'inception')
    detector = metric_utils.get_feature_detector(url, opts.device, opts.num_gpus, opts.rank, opts.verbose())
    process = _levels_process(detector, sigmas)

    real_stream = metric_utils.DatasetStream(opts, opts.dataset_kwargs, max_items=max_real, tag='dataset levels')
    make_real = lambda: {f'level{i}': metric_utils.FeatureStats(capture_mean_cov=True) for i in range(len(sigmas))}
    key = dict(definition=DEFINITION, detector_url=str(url), sigmas=[float(s) for s in sigmas], taps=TAPS)
    real = metric_utils.cached_dataset_stats(opts, real_stream, process, make_real,
                                             metric_utils.detector_name(url) + '-levels', key)

    gen_stream = metric_utils.generated_stream(opts, num_gen, tag='generator levels')
    gen = metric_utils.accumulate_stream(opts, gen_stream, process, make_real)

    fids = [frechet.fid_from_stats(real[f'level{i}'], gen[f'level{i}']) for i in range(len(sigmas))]
    results = {result_key(prefix, s): f for s, f in zip(sigmas, fids)}
    if opts.rank == 0:
        opts.figures[''] = draw_figure(sigmas, np.array(fids), prefix)
    return results
