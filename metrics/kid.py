"""Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y/d + 1)^3,
averaged over `num_subsets` random subsets of size m = min(n_real, n_gen, max_subset_size)."""

import numpy as np

from stylefreq import metric_streams
from . import metric_utils


def _cubic(x, y, d):
    k = x @ y.T / d + 1
    return k * k * k          # much faster than k ** 3 (a pow() per element)


def kid_from_features(real, gen, num_subsets, max_subset_size, seed=0) -> float:
    real = np.asarray(real, np.float64)
    gen = np.asarray(gen, np.float64)
    d = real.shape[1]
    m = min(real.shape[0], gen.shape[0], max_subset_size)
    if m < 2:
        raise metric_streams.MetricError(f'KID needs at least 2 images per side, got {m}')
    rnd = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rnd.choice(gen.shape[0], m, replace=False)]
        y = real[rnd.choice(real.shape[0], m, replace=False)]
        kxx, kyy, kxy = _cubic(x, x, d), _cubic(y, y, d), _cubic(x, y, d)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        total += within - 2 * kxy.mean()
    return float(total / num_subsets)


def compute_kid(opts, max_real, num_gen, num_subsets, max_subset_size):
    url = metric_utils.detector_url(opts, 'inception')
    kwargs = dict(return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, url, kwargs, max_items=max_real, capture_all=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, url, kwargs, max_items=num_gen, capture_all=True)
    return kid_from_features(real.get_all(), gen.get_all(), num_subsets, max_subset_size, seed=opts.seed)
