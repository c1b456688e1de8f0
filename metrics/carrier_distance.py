"""Per-carrier distribution distance of planar-cosine data (Khayatkhoei & Elgammal's toy evaluation).

For every carrier (fx, fy) of a cosine dataset, each image's DFT coefficient gives a magnitude m
and a phase phi (`training.synthetic.estimate_cosine_params` reads them, the inverse of the data
generator). Whether a GAN has learnt the data is then whether the distributions of m and phi over
generated images match those over real images. Following the authors' evaluation, each sample set
is histogrammed with 128 bins (magnitude on [0, 1], phase on [-pi, pi]) and two distances are
reported:

- W1: scipy.stats.wasserstein_distance between the two histograms, each as point masses at the
  left bin edges weighted by the histogram density;
- TV: total variation 1/2 sum_b |p_b - q_b| of the normalised histograms (in [0, 1]).

Samples outside the histogram range are clipped into the first or last bin (np.histogram would
silently drop them, which would hide the very mismatch being measured); magnitudes are >= 0 by
construction, so only generated magnitudes above 1 are affected.

`cosine_distances` takes images and reads their parameters with training.synthetic's estimator.
"""

import math

import numpy as np

from training.synthetic import estimate_cosine_params

NUM_BINS = 128
MAGNITUDE_RANGE = (0.0, 1.0)
PHASE_RANGE = (-math.pi, math.pi)


def histogram(samples, value_range, bins=NUM_BINS):
    """(density [bins], left bin edges [bins]) of 1-D samples, clipped into `value_range`."""
    samples = np.asarray(samples, dtype=np.float64).ravel()
    if samples.size == 0:
        raise ValueError('cannot histogram an empty sample set')
    if not np.all(np.isfinite(samples)):
        raise ValueError('samples contain NaN or infinite values')
    lo, hi = float(value_range[0]), float(value_range[1])
    density, edges = np.histogram(np.clip(samples, lo, hi), bins=bins, range=(lo, hi), density=True)
    return density, edges[:-1]


def histogram_distances(real, fake, value_range, bins=NUM_BINS):
    """dict(w1=..., tv=...) between two 1-D sample sets, histogrammed with `bins` bins over `value_range`."""
    from scipy.stats import wasserstein_distance
    p, positions = histogram(real, value_range, bins)
    q, _ = histogram(fake, value_range, bins)
    w1 = float(wasserstein_distance(positions, positions, u_weights=p, v_weights=q))
    tv = float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())
    return dict(w1=w1, tv=tv)


def carrier_distances(real_mags, real_phases, fake_mags, fake_phases, freqs=None, bins=NUM_BINS):
    """Per-carrier magnitude and phase distances.

    real_*/fake_*: [N, K] arrays (N samples, K carriers; the sample counts may differ between real
    and fake). Returns a list of K dicts: {'freq': [fx, fy] (if `freqs` is given),
    'magnitude': {'w1', 'tv'}, 'phase': {'w1', 'tv'}}.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (real_mags, real_phases, fake_mags, fake_phases)]
    arrays = [a[:, None] if a.ndim == 1 else a for a in arrays]
    k = arrays[0].shape[1]
    if any(a.ndim != 2 or a.shape[1] != k for a in arrays):
        raise ValueError(f'expected [N, K] magnitude and phase arrays with the same K, got '
                         f'{[list(a.shape) for a in arrays]}')
    if freqs is not None and len(freqs) != k:
        raise ValueError(f'{len(freqs)} carrier frequencies given for {k} carriers')
    out = []
    for i in range(k):
        entry = {} if freqs is None else dict(freq=[int(c) if float(c).is_integer() else float(c) for c in freqs[i]])
        entry['magnitude'] = histogram_distances(arrays[0][:, i], arrays[2][:, i], MAGNITUDE_RANGE, bins)
        entry['phase'] = histogram_distances(arrays[1][:, i], arrays[3][:, i], PHASE_RANGE, bins)
        out.append(entry)
    return out


def cosine_distances(real_images, fake_images, spec, bins=NUM_BINS):
    """Per-carrier distances between uint8 images ([N, R, R] or [N, 1, R, R]) of a cosine dataset.

    `spec`: training.synthetic.CosineSpec (from the dataset's dataset.json "cosine" record).
    Generated float images in [-1, 1] must be quantised the way reals are (synthetic.to_uint8)
    before they come here, so that both sides see the same rounding.
    """
    real_m, real_p = estimate_cosine_params(real_images, spec)
    fake_m, fake_p = estimate_cosine_params(fake_images, spec)
    return carrier_distances(real_m, real_p, fake_m, fake_p, freqs=spec.freqs, bins=bins)
