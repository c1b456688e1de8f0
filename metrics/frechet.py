"""Fréchet distance between Gaussian fits of detector features (FID).

FID = |mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)), with biased (1/N) float64 covariances
and the real part of scipy's matrix square root, as in StyleGAN2-ADA.
"""

from stylefreq.specmetrics import frechet_distance  # noqa: F401 (shared with the upstream adapters)

from . import metric_utils


def fid_from_stats(stats_real, stats_gen) -> float:
    mu_r, sigma_r = stats_real.get_mean_cov()
    mu_g, sigma_g = stats_gen.get_mean_cov()
    return frechet_distance(mu_g, sigma_g, mu_r, sigma_r)


def compute_fid(opts, max_real, num_gen):
    url = metric_utils.detector_url(opts, 'inception')
    kwargs = dict(return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, url, kwargs, max_items=max_real, capture_mean_cov=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, url, kwargs, max_items=num_gen, capture_mean_cov=True)
    return fid_from_stats(real, gen)
