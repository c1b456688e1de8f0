"""What the patches in `patches/` call from inside a stock StyleGAN2-ADA-PyTorch checkout.

The patches keep their own lines few: `train.py` hands its option dict to `configure_training`,
`training/loss.py` adds `d_aux_loss` to the discriminator loss, and `metrics/metric_main.py`
registers `metric_functions(metric_utils)`. Everything here is written against upstream's public
interfaces: the network-kwargs dicts, `MetricOptions`
(`G, G_kwargs, dataset_kwargs, num_gpus, rank, device, progress, cache`) and
`metric_utils.get_feature_detector`. Like all of stylefreq/, it never imports the engine's
`training/` or `metrics/` packages: inside a checkout those names are upstream's.
"""

from __future__ import annotations

import os

from stylefreq import features, metric_streams, specmetrics
from stylefreq.progress import ProgressMonitor


# ------------------------------------------------------------------------------------------------
# train.py


def configure_training(desc, args, *, ssd=False, ssd_lambda=None, ssd_mode=None, freq_shift=None):
    """Wrap upstream's G_kwargs / D_kwargs for --cfg=ssd (--ssd-lambda, --ssd-mode) and --freq-shift.

    `args` is the EasyDict built by upstream's `setup_training_loop_kwargs` (modified in place);
    `ssd` is --cfg=ssd. Returns the run description with stylefreq's suffixes. The wiring and its
    checks are `stylefreq.features.configure`, the same as stylefreq's own train.py; bad values
    raise ValueError with one sentence naming the flag (the patch turns it into upstream's UserError).
    """
    desc, args.G_kwargs, args.D_kwargs = features.configure(
        desc, args.G_kwargs, args.D_kwargs, resolution=int(args.training_set_kwargs.resolution),
        channels=getattr(args, 'stylefreq_img_channels', None), preset_ssd=bool(ssd), ssd_lambda=ssd_lambda,
        ssd_mode=ssd_mode, freq_shift=freq_shift)
    if features.out_shift_meets_lowpass(args.G_kwargs, args.D_kwargs):
        print(f'warning: {features.OUT_SHIFT_RISK}; this checkout keeps upstream\'s D, while stylefreq\'s train.py '
              'trains the output shift with D\'s low-pass off (--d-antialias=0)')
    return desc


# ------------------------------------------------------------------------------------------------
# training/loss.py


def d_aux_loss(D, img, c, real):
    """The discriminator's optional `aux_loss(img, c, real)` hook ([N] or None) as a loss term, else 0.

    `SSDDiscriminator` in 'official' mode trains its spectral classifier with it. `img` is the image
    D scored (after augmentation); DistributedDataParallel wrappers are looked through.
    """
    hook = getattr(getattr(D, 'module', D), 'aux_loss', None)
    if hook is None:
        return 0
    loss = hook(img, c, real=real)
    return 0 if loss is None else loss


# ------------------------------------------------------------------------------------------------
# metrics/metric_main.py

def stream_options(opts):
    """stylefreq's metric options from upstream's MetricOptions (G, G_kwargs, dataset_kwargs,
    num_gpus, rank, device, progress, cache): the same streams, seeds and cache as stylefreq's own
    metrics, so both compute the same numbers for the same network and data."""
    verbose = bool(getattr(opts.progress, 'verbose', False))
    return metric_streams.MetricOptions(G=opts.G, G_kwargs=opts.G_kwargs, dataset_kwargs=opts.dataset_kwargs,
                                        num_gpus=opts.num_gpus, rank=opts.rank, device=opts.device,
                                        progress=ProgressMonitor(verbose=verbose), cache=opts.cache)


def compute_specdisc(opts, prefix, num_gen, max_real):
    return specmetrics.specdisc(stream_options(opts), prefix, num_gen, max_real)[0]


def compute_fid_levels(opts, metric_utils, prefix, num_gen, max_real):
    url = os.environ.get(metric_streams.DETECTOR_ENV['inception']) or metric_streams.DETECTOR_URLS['inception']
    detector = metric_utils.get_feature_detector(url, device=opts.device, num_gpus=opts.num_gpus, rank=opts.rank,
                                                 verbose=opts.progress.verbose)
    return specmetrics.fid_levels(stream_options(opts), detector, url, prefix, num_gen, max_real)[0]


# Registered names -> (kind, number of generated images = max real images).
UPSTREAM_METRICS = {
    'specdisc': ('specdisc', 10000), 'specdisc1k': ('specdisc', 1000), 'specdisc50k': ('specdisc', 50000),
    'fid_levels': ('fid_levels', 50000), 'fid_levels1k': ('fid_levels', 1000), 'fid_levels10k': ('fid_levels', 10000),
}


def metric_functions(metric_utils):
    """Metric functions for upstream's registry (`register_metric` keys them by `__name__`).

    `metric_utils` is the checkout's own module (for its Inception detector loader); results are
    computed on rank 0's and the other ranks' shares together, like upstream's metrics.
    """
    fns = []
    for name, (kind, n) in UPSTREAM_METRICS.items():
        def fn(opts, name=name, kind=kind, n=n):
            if kind == 'specdisc':
                return compute_specdisc(opts, name, num_gen=n, max_real=n)
            return compute_fid_levels(opts, metric_utils, name, num_gen=n, max_real=n)
        fn.__name__ = fn.__qualname__ = name
        fns.append(fn)
    return fns
