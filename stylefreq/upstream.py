"""What the patches in `patches/` call from inside a stock StyleGAN2-ADA-PyTorch checkout.

The patches keep their own lines few: `train.py` hands its option dict to `configure_training`,
`training/loss.py` adds `d_aux_loss` to the discriminator loss, and `metrics/metric_main.py`
registers `metric_functions(metric_utils)`. Everything here is written against upstream's public
interfaces (research/upstream.md sections 1 and 3): the network-kwargs dicts, `MetricOptions`
(`G, G_kwargs, dataset_kwargs, num_gpus, rank, device, progress, cache`) and
`metric_utils.get_feature_detector`. Like all of stylefreq/, it never imports the engine's
`training/` or `metrics/` packages: inside a checkout those names are upstream's.
"""

from __future__ import annotations

import copy
import hashlib
import os

import numpy as np
import torch

from stylefreq import specmetrics
from stylefreq.kwargs import construct_class_by_name

INCEPTION_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt'
INCEPTION_ENV = 'STYLEFREQ_INCEPTION_URL'

# ------------------------------------------------------------------------------------------------
# train.py


def configure_training(desc, args, *, ssd=False, ssd_lambda=None, ssd_mode=None, freq_shift=None):
    """Wrap upstream's G_kwargs / D_kwargs for --cfg=ssd (--ssd-lambda, --ssd-mode) and --freq-shift.

    `args` is the EasyDict built by upstream's `setup_training_loop_kwargs` (modified in place);
    `ssd` is --cfg=ssd. Returns the run description with stylefreq's suffixes. The wiring and its
    checks are `stylefreq.features.configure`, the same as stylefreq's own train.py; bad values
    raise ValueError with one sentence naming the flag (the patch turns it into upstream's UserError).
    """
    from stylefreq import features
    desc, args.G_kwargs, args.D_kwargs = features.configure(
        desc, args.G_kwargs, args.D_kwargs, resolution=int(args.training_set_kwargs.resolution),
        channels=getattr(args, 'stylefreq_img_channels', None), preset_ssd=bool(ssd), ssd_lambda=ssd_lambda,
        ssd_mode=ssd_mode, freq_shift=freq_shift)
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

def _dataset(opts):
    return construct_class_by_name(**opts.dataset_kwargs)


def _to_rgb(images):
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def _real_batches(opts, max_items, batch_size=64):
    """uint8 [N, C, H, W] batches of this rank's share of the first max_items dataset images."""
    dataset = _dataset(opts)
    n = len(dataset) if max_items is None else min(len(dataset), max_items)
    indices = list(range(opts.rank, n, opts.num_gpus))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                         num_workers=0)
    for images, _labels in loader:
        yield torch.as_tensor(images).to(opts.device)


def _gen_batches(opts, num_items, batch_size=16):
    """uint8 batches of this rank's share of num_items generated images (dataset labels as c)."""
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    dataset = _dataset(opts)
    rng = np.random.RandomState(123 + opts.rank)
    todo = len(range(opts.rank, num_items, opts.num_gpus))
    while todo > 0:
        n = min(batch_size, todo)
        z = torch.randn([n, G.z_dim], device=opts.device)
        c = [dataset.get_label(rng.randint(len(dataset))) for _ in range(n)]
        c = torch.from_numpy(np.stack(c)).pin_memory() if opts.device.type == 'cuda' else torch.from_numpy(np.stack(c))
        img = G(z=z, c=c.to(opts.device), **(opts.G_kwargs or {}))
        yield (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        todo -= n


def _all_sum(x, opts):
    x = torch.as_tensor(x, dtype=torch.float64, device=opts.device)
    if opts.num_gpus > 1:
        torch.distributed.all_reduce(x)
    return x


def _mean_spectrum(opts, batches):
    total, count, shape = None, 0, None
    for images in batches:
        s = specmetrics.batch_power_sum(images)
        total = s if total is None else total + s
        count += images.shape[0]
        shape = images.shape[-2:]
    total, count = _all_sum(total, opts), int(_all_sum(count, opts).item())
    if count == 0:
        raise ValueError('specdisc: no images')
    return (total / count).reshape(*shape).cpu().numpy()


def compute_specdisc(opts, prefix, num_gen, max_real):
    pbar_real = _mean_spectrum(opts, _real_batches(opts, max_real))
    pbar_gen = _mean_spectrum(opts, _gen_batches(opts, num_gen))
    return {f'{prefix}_{k}': v for k, v in specmetrics.spectral_discrepancy(pbar_real, pbar_gen).items()}


def _level_stats(opts, batches, detector, sigmas):
    sums = [None] * len(sigmas)
    count = 0
    for images in batches:
        for i, x in enumerate(specmetrics.highpass_levels(_to_rgb(images), sigmas)):
            f = detector(x, return_features=True).to(torch.float64)
            s = (f.sum(0), f.T @ f)
            sums[i] = s if sums[i] is None else (sums[i][0] + s[0], sums[i][1] + s[1])
        count += images.shape[0]
    count = int(_all_sum(count, opts).item())
    out = []
    for s1, s2 in sums:
        s1, s2 = _all_sum(s1, opts).cpu().numpy(), _all_sum(s2, opts).cpu().numpy()
        mu = s1 / count
        out.append((mu, s2 / count - np.outer(mu, mu)))
    return out


def compute_fid_levels(opts, metric_utils, prefix, num_gen, max_real, sigmas=specmetrics.FID_LEVELS_SIGMAS):
    url = os.environ.get(INCEPTION_ENV) or INCEPTION_URL
    detector = metric_utils.get_feature_detector(url, device=opts.device, num_gpus=opts.num_gpus, rank=opts.rank,
                                                 verbose=opts.progress.verbose)
    cache_file = None
    if opts.cache and opts.num_gpus == 1:
        key = repr(sorted(dict(dataset_kwargs=dict(opts.dataset_kwargs), url=url, sigmas=[float(s) for s in sigmas],
                               max_real=max_real, definition=specmetrics.FID_LEVELS_DEFINITION).items()))
        from stylefreq.checkpoint import make_cache_dir_path
        name = os.path.splitext(os.path.basename(str(opts.dataset_kwargs.get('path', 'data'))))[0]
        cache_file = make_cache_dir_path('gan-metrics', f'{name}-fid-levels-{hashlib.md5(key.encode()).hexdigest()}.npz')
    if cache_file is not None and os.path.isfile(cache_file):
        z = np.load(cache_file)
        real = [(z[f'mu{i}'], z[f'sigma{i}']) for i in range(len(sigmas))]
    else:
        real = _level_stats(opts, _real_batches(opts, max_real), detector, sigmas)
        if cache_file is not None:
            os.makedirs(os.path.dirname(cache_file), exist_ok=True)
            tmp = cache_file + f'.tmp{os.getpid()}.npz'
            np.savez(tmp, **{f'{k}{i}': v for i, (m, s) in enumerate(real) for k, v in (('mu', m), ('sigma', s))})
            os.replace(tmp, cache_file)
    gen = _level_stats(opts, _gen_batches(opts, num_gen), detector, sigmas)
    return {specmetrics.fid_levels_key(prefix, s): specmetrics.frechet_distance(g[0], g[1], r[0], r[1])
            for s, r, g in zip(sigmas, real, gen)}


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
