"""Improved precision and recall (Kynkäänniemi et al. 2019) on VGG16 features.

A sample is inside a set's manifold when it lies within the distance to the k-th nearest neighbour
(k = nhood_size, not counting the point itself) of at least one point of the set. Precision: the
share of generated samples inside the real manifold; recall: the share of real samples inside the
generated manifold. Distances are computed in float32, row batches split across ranks.
"""

import torch

from stylefreq import metric_streams
from . import metric_utils


def _split_rows(opts, num_rows, row_batch_size, fn):
    """fn(lo, hi) -> [hi-lo, F] for row batches spread over ranks; the concatenation on every rank."""
    num_batches = (num_rows + row_batch_size - 1) // row_batch_size
    parts = [None] * num_batches
    process = lambda g: {'v': fn(g * row_batch_size, min((g + 1) * row_batch_size, num_rows))}
    consume = lambda g, out: parts.__setitem__(g, out['v'])
    metric_streams.run_distributed(opts, num_batches, process, consume, ['v'])
    return torch.cat(parts) if parts else torch.zeros([0, 1], dtype=torch.float64)


def _kth_radii(opts, manifold, k, row_batch_size, col_batch_size):
    def radii(lo, hi):
        # The (k+1)-th smallest distance (the point itself is the first), kept as a running top-k so
        # memory stays at rows x col_batch_size whatever the size of the manifold.
        rows = manifold[lo:hi]
        best = None
        for cols in manifold.split(col_batch_size):
            d = torch.cdist(rows, cols)
            d = d if best is None else torch.cat([best, d], dim=1)
            best = d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values
        return best[:, k:k + 1]
    return _split_rows(opts, manifold.shape[0], row_batch_size, radii)[:, 0].to(torch.float32)


def _inside(opts, probes, manifold, radii, row_batch_size, col_batch_size):
    radii = radii.to(manifold.device)

    def inside(lo, hi):
        rows = probes[lo:hi]
        hit = torch.zeros([rows.shape[0]], dtype=torch.bool, device=rows.device)
        for c0 in range(0, manifold.shape[0], col_batch_size):
            d = torch.cdist(rows, manifold[c0:c0 + col_batch_size])
            hit |= (d <= radii[c0:c0 + col_batch_size][None]).any(dim=1)
        return hit[:, None].to(torch.float32)
    return _split_rows(opts, probes.shape[0], row_batch_size, inside)[:, 0]


def precision_recall_from_features(opts, real, gen, nhood_size, row_batch_size, col_batch_size):
    real = real.to(opts.device, torch.float32)
    gen = gen.to(opts.device, torch.float32)
    results = {}
    for name, manifold, probes in [('precision', real, gen), ('recall', gen, real)]:
        if manifold.shape[0] <= nhood_size:
            raise metric_streams.MetricError(f'precision/recall with k={nhood_size} needs more than {nhood_size} images '
                                           f'per side, got {manifold.shape[0]}')
        radii = _kth_radii(opts, manifold, nhood_size, row_batch_size, col_batch_size)
        results[name] = float(_inside(opts, probes, manifold, radii, row_batch_size, col_batch_size).mean())
    return results['precision'], results['recall']


def compute_pr(opts, max_real, num_gen, nhood_size, row_batch_size, col_batch_size):
    url = metric_utils.detector_url(opts, 'vgg16')
    kwargs = dict(return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(opts, url, kwargs, max_items=max_real, capture_all=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, url, kwargs, max_items=num_gen, capture_all=True)
    return precision_recall_from_features(opts, real.get_all_torch(), gen.get_all_torch(), nhood_size,
                                          row_batch_size, col_batch_size)
