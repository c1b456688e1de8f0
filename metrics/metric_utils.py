"""What the detector-based metrics (FID, KID, PR, IS, PPL) share: the TorchScript feature detectors
(the URLs StyleGAN2-ADA publishes, overridable) and detector features of real and generated images.
The stream and statistics machinery below them is stylefreq.metric_streams.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.distributed as dist

from stylefreq import download
from stylefreq.feature_stats import FeatureStats
from stylefreq import metric_streams
from stylefreq.metric_streams import DETECTOR_ENV, DETECTOR_URLS, MetricError


# ------------------------------------------------------------------------------------------------
# Feature detectors (TorchScript, as published for StyleGAN2-ADA).



def detector_url(opts, kind: str) -> str:
    """URL or path of the detector `kind` ('inception' | 'vgg16'): opts.detector_urls[kind] >
    $STYLEFREQ_INCEPTION_URL / $STYLEFREQ_VGG16_URL > upstream's published URL."""
    if kind not in DETECTOR_URLS:
        raise ValueError(f'unknown detector kind {kind!r}; expected one of {sorted(DETECTOR_URLS)}')
    return (opts.detector_urls or {}).get(kind) or os.environ.get(DETECTOR_ENV[kind]) or DETECTOR_URLS[kind]


def detector_name(url: str) -> str:
    """'https://.../inception-2015-12-05.pt' -> 'inception-2015-12-05' (used in cache file names)."""
    base = os.path.basename(str(url).rstrip('/').split('?')[0])
    return os.path.splitext(base)[0] or 'detector'


_detectors = {}


def get_feature_detector(url, device=torch.device('cpu'), num_gpus=1, rank=0, verbose=False):
    """Load a TorchScript feature detector from a path or URL (through the download cache), once
    per (url, device). With several processes rank 0 goes first, so only it downloads."""
    device = torch.device(device)
    key = (str(url), str(device))
    if key not in _detectors:
        leader = rank == 0
        if num_gpus > 1 and not leader:
            dist.barrier()
        try:
            path = download.open_url(url, return_filename=True, verbose=verbose and leader)
            _detectors[key] = torch.jit.load(path, map_location=device).eval()
        except (OSError, RuntimeError, ValueError) as e:
            if num_gpus > 1 and leader:
                dist.barrier()      # release the others; they will fail the same way
            env = ', '.join(f'${v}' for v in DETECTOR_ENV.values())
            raise MetricError(f'cannot load the feature detector {url}: {e} (give a local copy with '
                              f'calc_metrics.py --inception-url/--vgg16-url or {env})') from None
        if num_gpus > 1 and leader:
            dist.barrier()
    return _detectors[key]


def _with_batch_size(opts, batch_size):
    if batch_size is None or batch_size == opts.batch_size:
        return opts
    opts = copy.copy(opts)
    opts.batch_size = int(batch_size)
    return opts


def compute_feature_stats_for_dataset(opts, detector_url, detector_kwargs, batch_size=None, max_items=None,
                                      **stats_kwargs):
    """Detector features of the real images (cached), as FeatureStats(**stats_kwargs)."""
    opts = _with_batch_size(opts, batch_size)
    stream = metric_streams.DatasetStream(opts, opts.dataset_kwargs, max_items=max_items, tag='dataset features')
    detector = get_feature_detector(detector_url, opts.device, opts.num_gpus, opts.rank, opts.verbose())

    def process(images):
        return {'features': detector(metric_streams.to_rgb(images), **detector_kwargs)}

    key = dict(detector_url=str(detector_url), detector_kwargs=detector_kwargs, stats_kwargs=stats_kwargs)
    make = lambda: {'features': FeatureStats(max_items=stream.num_items, **stats_kwargs)}
    return metric_streams.cached_dataset_stats(opts, stream, process, make, detector_name(detector_url), key)['features']


def compute_feature_stats_for_generator(opts, detector_url, detector_kwargs, batch_size=None, batch_gen=None,
                                        max_items=None, **stats_kwargs):
    """Detector features of `max_items` generated images (or of opts.gen_dataset_kwargs' images)."""
    if max_items is None:
        raise ValueError('compute_feature_stats_for_generator needs max_items (how many images to generate)')
    opts = _with_batch_size(opts, batch_size)
    stream = metric_streams.generated_stream(opts, max_items, tag='generator features', batch_gen=batch_gen)
    detector = get_feature_detector(detector_url, opts.device, opts.num_gpus, opts.rank, opts.verbose())

    def process(images):
        return {'features': detector(metric_streams.to_rgb(images), **detector_kwargs)}

    make = lambda: {'features': FeatureStats(max_items=stream.num_items, **stats_kwargs)}
    return metric_streams.accumulate_stream(opts, stream, process, make)['features']
