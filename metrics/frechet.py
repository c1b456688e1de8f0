"""Fréchet distance between Gaussian fits of detector features (FID).

FID = |mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)), with biased (1/N) float64 covariances
and the real part of scipy's matrix square root, as in StyleGAN2-ADA.
"""

from stylefreq.specmetrics import frechet_from_stats

from . import metric_utils


def compute_fid(opts, max_real, num_gen):
    url = metric_utils.detector_url(opts, 'inception')
    kwargs = dict(return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, url, kwargs, max_items=max_real, capture_mean_cov=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, url, kwargs, max_items=num_gen, capture_mean_cov=True)
    return frechet_from_stats(gen, real)
