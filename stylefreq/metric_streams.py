"""The machinery every metric runs on: options, image streams, distributed accumulation, and the
cache of real-image statistics. It serves stylefreq's metric registry (metrics/) and the metrics a
patched StyleGAN2-ADA checkout registers (stylefreq.upstream), so both compute the same numbers.

How work is split (any number of processes, CPU or GPU, the same result as one process): the
images of a stream are cut into *global batches* of `batch_size` items, batch g holding items
[g*B, (g+1)*B). In round t, rank r processes global batch t*R + r. Whatever a metric computes from
a batch (features, summed spectra) is all-gathered after every round and handed to the
accumulators of *every* rank in global batch order, so every rank ends with the complete
statistics, bit-identical to a single-process run.

Generated images are reproducible for the same reason: global batch g of a generator stream draws
its latents, labels and noise from seeds derived from (opts.seed, stream name, g), inside
`torch.random.fork_rng`, so neither the rank layout nor the caller's RNG state changes them, and
evaluating a metric never disturbs a training loop's random streams.

Real-image statistics are cached under `<cache>/gan-metrics/` (stylefreq.feature_stats: format
and validation), keyed by an md5 over everything that determines them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os

import numpy as np
import torch
import torch.distributed as dist

from stylefreq import distributed, download
from stylefreq.feature_stats import STATS_FORMAT, load_stats_file, same_kind, save_stats_file
from stylefreq.kwargs import EasyDict, construct_class_by_name
from stylefreq.progress import ProgressMonitor


# The feature detectors StyleGAN2-ADA publishes (TorchScript), and the variables that replace them.
DETECTOR_URLS = {
    'inception': 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt',
    'vgg16': 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt',
}
DETECTOR_ENV = {'inception': 'STYLEFREQ_INCEPTION_URL', 'vgg16': 'STYLEFREQ_VGG16_URL'}


class MetricError(RuntimeError):
    """A metric cannot be computed as asked (bad options, missing detector, wrong image format)."""


class MetricOptions:
    """Everything a metric function needs.

    G / G_kwargs: the generator and extra kwargs for its forward (noise_mode, truncation_psi).
    dataset_kwargs: the real images (`class_name` + kwargs, as `training_set_kwargs`).
    gen_dataset_kwargs: evaluate these images as the "generated" side instead of G.
    num_gpus, rank, device: the process layout (device default: cuda:<rank> if CUDA, else cpu).
    progress: a ProgressMonitor (only rank 0's prints). cache: use the real-statistics cache.
    detector_urls: {'inception': url|path, 'vgg16': url|path} overrides (see `detector_url`).
    seed: base seed of the generated-image streams. batch_size: items per global batch.
    """

    def __init__(self, G=None, G_kwargs=None, dataset_kwargs=None, num_gpus=1, rank=0, device=None, progress=None,
                 cache=True, detector_urls=None, gen_dataset_kwargs=None, seed=0, batch_size=64, num_workers=None):
        if not 0 <= rank < num_gpus:
            raise ValueError(f'rank {rank} is outside 0..{num_gpus - 1}')
        if num_gpus > 1 and not dist.is_initialized():
            raise MetricError(f'num_gpus={num_gpus} needs torch.distributed to be initialised in every process')
        self.G = G
        self.G_kwargs = EasyDict(G_kwargs or {})
        self.dataset_kwargs = EasyDict(dataset_kwargs or {})
        self.gen_dataset_kwargs = EasyDict(gen_dataset_kwargs) if gen_dataset_kwargs else None
        self.num_gpus = num_gpus
        self.rank = rank
        if device is None:
            device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
        self.device = torch.device(device)
        self.progress = progress if progress is not None and rank == 0 else ProgressMonitor(verbose=False)
        self.cache = cache
        self.detector_urls = dict(detector_urls or {})
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.num_workers = num_workers
        self.figures = {}           # name suffix -> PIL.Image, drawn by rank 0 (written by report_metric)

    def verbose(self):
        return self.progress.verbose and self.rank == 0


# ------------------------------------------------------------------------------------------------
# Processes.

def run_distributed(opts, num_batches, process_batch, consume, keys):
    """Call `process_batch(g) -> {key: [rows, F] tensor}` for this rank's global batches and
    `consume(g, {key: float64 CPU tensor})` on every rank for every batch g in increasing order."""
    R = opts.num_gpus
    for t in range((num_batches + R - 1) // R):
        g = t * R + opts.rank
        out = process_batch(g) if g < num_batches else None
        gathered = {k: distributed.all_gather_matrices(None if out is None else out[k], opts.device) for k in keys}
        for r in range(R):
            if t * R + r < num_batches:
                consume(t * R + r, {k: gathered[k][r] for k in keys})


# ------------------------------------------------------------------------------------------------
# The statistics cache.

def stats_cache_path(opts, dataset_name, detector, key: dict) -> str:
    """`<cache>/gan-metrics/<dataset name>-<detector>-<md5>.npz`; md5 over the dataset kwargs and `key`."""
    desc = json.dumps(dict(format=STATS_FORMAT, dataset_kwargs=opts.dataset_kwargs, **key), sort_keys=True,
                      default=repr)
    md5 = hashlib.md5(desc.encode('utf-8')).hexdigest()
    return download.make_cache_dir_path('gan-metrics', f'{dataset_name}-{detector}-{md5}.npz')


# ------------------------------------------------------------------------------------------------
# Image streams: global batches of uint8 [b, C, H, W] images.

def open_dataset(dataset_kwargs):
    try:
        return construct_class_by_name(**dataset_kwargs)
    except (OSError, ValueError) as e:
        raise MetricError(f'cannot open dataset {dataset_kwargs.get("path", dataset_kwargs)}: {e}') from None


class DatasetStream:
    """Items [g*B, (g+1)*B) of a dataset as global batch g."""

    def __init__(self, opts, dataset_kwargs, max_items=None, tag='dataset'):
        self.opts = opts
        self.dataset = open_dataset(dataset_kwargs)
        self.name = self.dataset.name
        self.image_shape = list(self.dataset.image_shape)
        n = len(self.dataset)
        self.num_items = n if max_items is None else min(n, int(max_items))
        self.batch_size = opts.batch_size
        self.num_batches = (self.num_items + self.batch_size - 1) // self.batch_size
        self.tag = tag
        self._loader = None

    def _batches(self):
        B, R = self.batch_size, self.opts.num_gpus
        mine = [list(range(g * B, min((g + 1) * B, self.num_items)))
                for g in range(self.opts.rank, self.num_batches, R)]
        workers = self.opts.num_workers
        if workers is None:
            workers = 0 if self.num_items <= 4096 else min(3, max(os.cpu_count() or 1, 1))
        kwargs = dict(num_workers=workers, pin_memory=self.opts.device.type == 'cuda')
        if workers > 0:
            kwargs.update(prefetch_factor=2, persistent_workers=False)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=mine, **kwargs)
        return iter(loader)

    def __call__(self, g):
        """Images of global batch g (must be called with this rank's g in increasing order)."""
        if self._loader is None:
            self._loader = self._batches()
        images, _labels = next(self._loader)
        return images.to(self.opts.device)


class GeneratorStream:
    """Global batch g of generated images: latents, labels and noise seeded by (seed, tag, g)."""

    def __init__(self, opts, num_items, tag='generator', batch_gen=None):
        if opts.G is None:
            raise MetricError('this metric needs a generator (or gen_dataset_kwargs)')
        self.opts = opts
        self.G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
        self.c_dim = int(getattr(self.G, 'c_dim', 0))
        self.labels = None
        if self.c_dim > 0:
            ds = open_dataset(opts.dataset_kwargs)
            self.labels = ds
            if ds.label_dim != self.c_dim:
                raise MetricError(f'the generator is conditional (c_dim={self.c_dim}) but dataset {ds.name} has '
                                  f'label dimension {ds.label_dim}')
        self.image_shape = [int(self.G.img_channels), int(self.G.img_resolution), int(self.G.img_resolution)]
        self.num_items = int(num_items)
        self.batch_size = opts.batch_size
        self.num_batches = (self.num_items + self.batch_size - 1) // self.batch_size
        if batch_gen is None:
            # GPU: upstream's 4. CPU: large batches amortise per-layer overhead; keep about 64 images of
            # 64x64 worth of activations at a time.
            res = max(int(self.G.img_resolution), 1)
            batch_gen = 4 if opts.device.type == 'cuda' else max(1, min(self.batch_size, 64 * 64 * 64 // (res * res)))
        self.batch_gen = batch_gen
        self.tag = tag
        self._seed_base = int.from_bytes(hashlib.md5(f'{opts.seed}/{tag}'.encode()).digest()[:4], 'little')

    def batch_seed(self, g):
        return (self._seed_base * 1_000_003 + g) % (2 ** 31)

    def latents(self, g, n):
        """(z [n, z_dim], c [n, c_dim]) of global batch g, on the device."""
        seed = self.batch_seed(g)
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn([self.batch_size, self.G.z_dim], generator=gen)[:n]
        if self.c_dim > 0:
            idx = np.random.RandomState(seed).randint(len(self.labels), size=self.batch_size)[:n]
            c = torch.from_numpy(np.stack([self.labels.get_label(int(i)) for i in idx]))
        else:
            c = torch.zeros([n, 0])
        return z.to(self.opts.device), c.to(self.opts.device)

    def __call__(self, g):
        n = min(self.batch_size, self.num_items - g * self.batch_size)
        z, c = self.latents(g, n)
        devices = [self.opts.device] if self.opts.device.type == 'cuda' else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.batch_seed(g))
            images = []
            for i in range(0, n, self.batch_gen):
                img = self.G(z=z[i:i + self.batch_gen], c=c[i:i + self.batch_gen], **self.opts.G_kwargs)
                images.append((img * 127.5 + 128).clamp(0, 255).to(torch.uint8))
        return torch.cat(images)


def generated_stream(opts, num_items, tag='generator', batch_gen=None):
    """The "generated" side: G, or the images of opts.gen_dataset_kwargs (all of them if fewer)."""
    if opts.gen_dataset_kwargs is not None:
        return DatasetStream(opts, opts.gen_dataset_kwargs, max_items=num_items, tag=tag)
    return GeneratorStream(opts, num_items, tag=tag, batch_gen=batch_gen)


def to_rgb(images):
    """uint8 [N, C, H, W] with C = 1 or 3 -> 3 channels (grey repeated), as the detectors expect."""
    if images.shape[1] == 1:
        return images.repeat([1, 3, 1, 1])
    if images.shape[1] != 3:
        raise MetricError(f'metrics support grayscale or RGB images, not {images.shape[1]} channels')
    return images


def accumulate_stream(opts, stream, process, make_stats, tag=None):
    """Run `process(images) -> {key: [rows, F] tensor}` over a stream; returns {key: FeatureStats}."""
    stats = make_stats()
    keys = list(stats)
    task = opts.progress.task(tag or stream.tag, stream.num_items)
    done = [0]

    def process_batch(g):
        return process(stream(g))

    def consume(g, out):
        for k in keys:
            stats[k].append(out[k].numpy())
        done[0] = min((g + 1) * stream.batch_size, stream.num_items)
        task.update(done[0])

    run_distributed(opts, stream.num_batches, process_batch, consume, keys)
    task.update(stream.num_items)
    return stats


def cached_dataset_stats(opts, stream, process, make_stats, detector, key: dict, tag=None):
    """`accumulate_stream` over a DatasetStream, through the statistics cache when opts.cache."""
    path = None
    if opts.cache:
        path = stats_cache_path(opts, stream.name, detector, dict(key, max_items=stream.num_items,
                                                                batch_size=stream.batch_size))
        stats = None
        if opts.rank == 0 and os.path.isfile(path):
            stats = load_stats_file(path)       # None when unreadable: recomputed and rewritten below
            if stats is not None and not same_kind(stats, make_stats()):
                stats = None
        if distributed.broadcast_object(stats is not None):
            if stats is None:
                stats = load_stats_file(path)
            if stats is None:
                raise MetricError(f'rank {opts.rank} cannot read the statistics cache file {path}')
            if opts.verbose():
                print(f'{tag or stream.tag:<20s} loaded from {path}')
            return stats
    stats = accumulate_stream(opts, stream, process, make_stats, tag=tag)
    if path is not None and opts.rank == 0:
        save_stats_file(path, stats)
    return stats
