"""Inception Score: exp(E_x KL(p(y|x) || p(y))) per split of the generated set; mean and std over
splits. Class probabilities come from the Inception detector with `no_output_bias=True`."""

import numpy as np

from stylefreq import metric_streams
from . import metric_utils


def inception_score_from_probs(probs, num_splits):
    probs = np.asarray(probs, np.float64)
    n = probs.shape[0]
    if n < num_splits:
        raise metric_streams.MetricError(f'IS with {num_splits} splits needs at least {num_splits} images, got {n}')
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide='ignore', invalid='ignore'):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts, num_gen, num_splits):
    url = metric_utils.detector_url(opts, 'inception')
    gen = metric_utils.compute_feature_stats_for_generator(opts, url, dict(no_output_bias=True), max_items=num_gen,
                                                           capture_all=True)
    return inception_score_from_probs(gen.get_all(), num_splits)
