"""Shared machinery of the metrics: options, feature detectors, image streams, statistics and their cache.

How work is split (any number of processes, CPU or GPU, the same result as one process):
the images of a stream are cut into *global batches* of `batch_size` items, batch g holding items
[g*B, (g+1)*B). In round t, rank r processes global batch t*R + r. Whatever a metric computes
from a batch (features, summed spectra) is all-gathered after every round and handed to the
accumulators of *every* rank in global batch order, so every rank ends with the complete
statistics, and they are bit-identical to a single-process run: the same batches are processed
and accumulated in the same order.

Generated images are reproducible for the same reason: global batch g of a generator stream draws
its latents, labels and noise from seeds derived from (opts.seed, stream name, g), inside
`torch.random.fork_rng`, so neither the rank layout nor the caller's RNG state changes them, and
evaluating a metric never disturbs the training loop's random streams.

Real-image statistics are cached as `<cache>/gan-metrics/<dataset name>-<detector>-<md5>.npz`,
the md5 taken over everything that determines them: an uncompressed .npz of a JSON header and
arrays, read without pickle and validated (sizes from the zip directory first, then dtypes, shapes,
finiteness); anything off is recomputed and replaced.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
import zipfile

import numpy as np
import torch
import torch.distributed as dist

from stylefreq import checkpoint, download, files
from stylefreq.kwargs import EasyDict, construct_class_by_name

# ------------------------------------------------------------------------------------------------
# Feature detectors (TorchScript, as published for StyleGAN2-ADA).

DETECTOR_URLS = {
    'inception': 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt',
    'vgg16': 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt',
}
DETECTOR_ENV = {'inception': 'STYLEFREQ_INCEPTION_URL', 'vgg16': 'STYLEFREQ_VGG16_URL'}


class MetricError(RuntimeError):
    """A metric cannot be computed as asked (bad options, missing detector, wrong image format)."""


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


# ------------------------------------------------------------------------------------------------
# Options and progress.

class ProgressMonitor:
    """Progress lines for rank 0 when `verbose`: one line rewritten in place on a terminal, else a
    line every `interval_s` seconds and at the end of each task."""

    def __init__(self, verbose=False, stream=None, interval_s=10.0):
        self.verbose = verbose
        self.stream = stream
        self.interval_s = interval_s

    def task(self, tag, num_items):
        return _ProgressTask(self, tag, num_items)


class _ProgressTask:
    def __init__(self, monitor, tag, num_items):
        self.monitor, self.tag, self.num_items = monitor, tag, num_items
        self.start = time.time()
        self.last_print = 0.0
        self.done = False

    def update(self, cur_items):
        mon = self.monitor
        if not mon.verbose or self.done:
            return
        stream = mon.stream or sys.stdout
        tty = hasattr(stream, 'isatty') and stream.isatty()
        finished = self.num_items is not None and cur_items >= self.num_items
        now = time.time()
        if not finished and now - self.last_print < (0.5 if tty else mon.interval_s):
            return
        self.last_print = now
        elapsed = now - self.start
        total = f'/{self.num_items}' if self.num_items is not None else ''
        ms = elapsed / max(cur_items, 1) * 1e3
        eta = ''
        if self.num_items and 0 < cur_items < self.num_items:
            eta = f'  eta {format_time(elapsed / cur_items * (self.num_items - cur_items))}'
        line = f'{self.tag:<20s} {cur_items}{total} items  {format_time(elapsed)}  {ms:.2f} ms/item{eta}'
        if tty:
            stream.write('\r' + line.ljust(79) + ('\n' if finished else ''))
        else:
            stream.write(line + '\n')
        stream.flush()
        self.done = finished


def format_time(seconds) -> str:
    s = int(np.rint(seconds))
    if s < 60:
        return f'{s}s'
    if s < 3600:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 86400:
        return f'{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m'


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

    def __init__(self, G=None, G_kwargs={}, dataset_kwargs={}, num_gpus=1, rank=0, device=None, progress=None,
                 cache=True, detector_urls=None, gen_dataset_kwargs=None, seed=0, batch_size=64, num_workers=None):
        if not 0 <= rank < num_gpus:
            raise ValueError(f'rank {rank} is outside 0..{num_gpus - 1}')
        if num_gpus > 1 and not dist.is_initialized():
            raise MetricError(f'num_gpus={num_gpus} needs torch.distributed to be initialised in every process')
        self.G = G
        self.G_kwargs = EasyDict(G_kwargs)
        self.dataset_kwargs = EasyDict(dataset_kwargs)
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
# Collectives (no-ops in a single process).

def _gather_rows(opts, x):
    """All-gather one [rows, F] tensor (or None: nothing this round) per rank -> list of float64 CPU
    tensors in rank order (None where a rank had nothing)."""
    if opts.num_gpus == 1:
        return [None if x is None else x.detach().to(torch.float64).cpu()]
    dev = opts.device if opts.device.type == 'cuda' else torch.device('cpu')
    shape = torch.tensor([-1, 0] if x is None else list(x.shape), dtype=torch.int64, device=dev)
    shapes = [torch.empty_like(shape) for _ in range(opts.num_gpus)]
    dist.all_gather(shapes, shape)
    shapes = [tuple(int(v) for v in s.cpu()) for s in shapes]
    rows = max(max(s[0] for s in shapes), 1)
    cols = max(max(s[1] for s in shapes), 1)
    buf = torch.zeros([rows, cols], dtype=torch.float64, device=dev)
    if x is not None:
        buf[:x.shape[0], :x.shape[1]] = x.detach().to(torch.float64)
    bufs = [torch.empty_like(buf) for _ in range(opts.num_gpus)]
    dist.all_gather(bufs, buf)
    return [None if s[0] < 0 else b[:s[0], :s[1]].cpu() for s, b in zip(shapes, bufs)]


def broadcast_flag(opts, flag: bool) -> bool:
    """Rank 0's boolean, on every rank."""
    if opts.num_gpus == 1:
        return bool(flag)
    dev = opts.device if opts.device.type == 'cuda' else torch.device('cpu')
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64, device=dev)
    dist.broadcast(t, src=0)
    return bool(t.item() != 0)


def run_distributed(opts, num_batches, process_batch, consume, keys):
    """Call `process_batch(g) -> {key: [rows, F] tensor}` for this rank's global batches and
    `consume(g, {key: float64 tensor})` on every rank for every batch g in increasing order."""
    R = opts.num_gpus
    for t in range((num_batches + R - 1) // R):
        g = t * R + opts.rank
        out = process_batch(g) if g < num_batches else None
        gathered = {k: _gather_rows(opts, None if out is None else out[k]) for k in keys}
        for r in range(R):
            if t * R + r < num_batches:
                consume(t * R + r, {k: gathered[k][r] for k in keys})


# ------------------------------------------------------------------------------------------------
# Statistics.

class FeatureStats:
    """Running statistics of feature rows: all rows and/or float64 sums for mean and covariance.

    Attribute names are upstream's (capture_all, capture_mean_cov, max_items, num_items,
    num_features, all_features, raw_mean, raw_cov). `capture_mean` keeps only the float64 sum of
    the rows (e.g. summed power spectra, where a covariance would be huge and useless).
    """

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None, capture_mean=False):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.capture_mean = capture_mean or capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features = None
        self.all_features = None
        self.raw_mean = None
        self.raw_cov = None

    def _init_features(self, num_features):
        if self.num_features is None:
            self.num_features = num_features
            self.all_features = []
            if self.capture_mean:
                self.raw_mean = np.zeros([num_features], dtype=np.float64)
            if self.capture_mean_cov:
                self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)
        elif num_features != self.num_features:
            raise MetricError(f'feature rows changed width from {self.num_features} to {num_features}')

    def is_full(self):
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x):
        """Add rows [N, F] (anything np.asarray takes), keeping at most max_items rows in total."""
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f'feature rows must be [N, F], got shape {list(x.shape)}')
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        self._init_features(x.shape[1])
        if x.shape[0] == 0:
            return
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x.astype(np.float32))
        if self.capture_mean:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            if self.capture_mean_cov:
                self.raw_cov += x64.T @ x64

    def get_all(self):
        if not self.capture_all:
            raise MetricError('these statistics did not capture all features')
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        if len(self.all_features) > 1:
            self.all_features = [np.concatenate(self.all_features, axis=0)]
        return self.all_features[0]

    def get_all_torch(self):
        return torch.from_numpy(self.get_all())

    def get_mean(self):
        if not self.capture_mean or self.num_items == 0:
            raise MetricError('no mean was captured (no items, or capture_mean off)')
        return self.raw_mean / self.num_items

    def get_mean_cov(self):
        """Mean and biased covariance E[xx^T] - mu mu^T, both float64."""
        if not self.capture_mean_cov or self.num_items == 0:
            raise MetricError('no covariance was captured (no items, or capture_mean_cov off)')
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)
        return mean, cov

    def save(self, path):
        """Write these statistics to `path` (the cache format; see `save_stats_file`)."""
        save_stats_file(path, {'stats': self})

    @staticmethod
    def load(path):
        """Read statistics written by `save` (never runs code from the file)."""
        stats = load_stats_file(path)
        if stats is None or 'stats' not in stats:
            raise MetricError(f'{path} is not a statistics file written by FeatureStats.save')
        return stats['stats']

STATS_FORMAT = 'stylefreq-metric-stats-2'
MAX_STATS_FEATURES = 1 << 16          # detector features per row (Inception: 2048, spectra: a few thousand)
MAX_STATS_BYTES = 16 << 30            # any one array in a statistics file
_STAT_FIELDS = ('capture_all', 'capture_mean_cov', 'capture_mean', 'max_items', 'num_items', 'num_features')


def save_stats_file(path, stats: dict):
    """Write {name: FeatureStats} atomically as an uncompressed .npz: a JSON header plus arrays."""
    header, arrays = {}, {}
    for name, st in stats.items():
        header[name] = {k: getattr(st, k) for k in _STAT_FIELDS}
        if st.capture_all and st.num_features is not None:
            arrays[f'{name}.all_features'] = st.get_all()
        if st.raw_mean is not None:
            arrays[f'{name}.raw_mean'] = st.raw_mean
        if st.raw_cov is not None:
            arrays[f'{name}.raw_cov'] = st.raw_cov
    arrays['header'] = np.array(json.dumps(dict(format=STATS_FORMAT, stats=header)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with files.atomic_write(path, 'wb') as f:
        np.savez(f, **arrays)


def _is_count(v, allow_none=False):
    return (v is None and allow_none) or (type(v) is int and 0 <= v)


def _checked_array(npz, key, shape, dtype):
    a = npz[key]
    if a.dtype != dtype or list(a.shape) != list(shape) or not np.isfinite(a).all():
        raise ValueError(f'{key}: expected finite {np.dtype(dtype).name} {list(shape)}, got {a.dtype} {list(a.shape)}')
    return a


def _stats_from(npz, name, fields):
    if not isinstance(fields, dict) or set(fields) != set(_STAT_FIELDS):
        raise ValueError(f'{name}: malformed header')
    flags = [fields[k] for k in ('capture_all', 'capture_mean_cov', 'capture_mean')]
    if not all(type(f) is bool for f in flags) or not _is_count(fields['max_items'], allow_none=True) \
            or not _is_count(fields['num_items']) or not _is_count(fields['num_features'], allow_none=True):
        raise ValueError(f'{name}: malformed header')
    st = FeatureStats(capture_all=fields['capture_all'], capture_mean_cov=fields['capture_mean_cov'],
                      max_items=fields['max_items'], capture_mean=fields['capture_mean'])
    n, F = fields['num_items'], fields['num_features']
    if st.max_items is not None and n > st.max_items:
        raise ValueError(f'{name}: {n} items but at most {st.max_items}')
    expected = set()
    if F is None:
        if n:
            raise ValueError(f'{name}: items without features')
    else:
        if not 1 <= F <= MAX_STATS_FEATURES:
            raise ValueError(f'{name}: {F} features')
        st.num_items, st.num_features, st.all_features = n, F, []
        if st.capture_all:
            expected.add(f'{name}.all_features')
            st.all_features = [_checked_array(npz, f'{name}.all_features', [n, F], np.float32)]
        if st.capture_mean:
            expected.add(f'{name}.raw_mean')
            st.raw_mean = _checked_array(npz, f'{name}.raw_mean', [F], np.float64)
        if st.capture_mean_cov:
            expected.add(f'{name}.raw_cov')
            st.raw_cov = _checked_array(npz, f'{name}.raw_cov', [F, F], np.float64)
    return st, expected


def load_stats_file(path) -> dict | None:
    """{name: FeatureStats} from `path`, or None when the file is not a valid statistics file of
    this format (the caller then recomputes and replaces it). Nothing is unpickled; every member's
    size is checked in the zip directory before it is read, compressed members are refused (no
    decompression bombs), and every array's dtype, shape and finiteness is checked."""
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > 1024 or any(i.compress_type != zipfile.ZIP_STORED or i.file_size > MAX_STATS_BYTES
                                        or i.file_size > size for i in infos):
                return None
        with np.load(path, allow_pickle=False) as npz:
            if 'header' not in npz.files or npz['header'].nbytes > (1 << 20):
                return None
            header = json.loads(str(npz['header']))
            if not isinstance(header, dict) or header.get('format') != STATS_FORMAT \
                    or not isinstance(header.get('stats'), dict):
                return None
            out, expected = {}, {'header'}
            for name, fields in header['stats'].items():
                out[name], keys = _stats_from(npz, str(name), fields)
                expected |= keys
            if set(npz.files) != expected:
                return None
            return out
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None


def _same_kind(loaded: dict, fresh: dict) -> bool:
    """Loaded statistics answer the same question as freshly made ones (names, capture flags, limits)."""
    if set(loaded) != set(fresh):
        return False
    return all(getattr(loaded[k], f) == getattr(fresh[k], f)
               for k in fresh for f in ('capture_all', 'capture_mean_cov', 'capture_mean', 'max_items'))


def stats_cache_path(opts, dataset_name, detector, key: dict) -> str:
    """`<cache>/gan-metrics/<dataset name>-<detector>-<md5>.pkl`; md5 over the dataset kwargs and `key`."""
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
            if stats is not None and not _same_kind(stats, make_stats()):
                stats = None
        if broadcast_flag(opts, stats is not None):
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


def _with_batch_size(opts, batch_size):
    if batch_size is None or batch_size == opts.batch_size:
        return opts
    opts = copy.copy(opts)
    opts.batch_size = int(batch_size)
    return opts


def compute_feature_stats_for_dataset(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=None,
                                      data_loader_kwargs=None, max_items=None, **stats_kwargs):
    """Detector features of the real images (cached), as FeatureStats(**stats_kwargs). rel_lo, rel_hi
    and data_loader_kwargs are accepted for plugins written against upstream, and ignored."""
    opts = _with_batch_size(opts, batch_size)
    stream = DatasetStream(opts, opts.dataset_kwargs, max_items=max_items, tag='dataset features')
    detector = get_feature_detector(detector_url, opts.device, opts.num_gpus, opts.rank, opts.verbose())

    def process(images):
        return {'features': detector(to_rgb(images), **detector_kwargs)}

    key = dict(detector_url=str(detector_url), detector_kwargs=detector_kwargs, stats_kwargs=stats_kwargs)
    make = lambda: {'features': FeatureStats(max_items=stream.num_items, **stats_kwargs)}
    return cached_dataset_stats(opts, stream, process, make, detector_name(detector_url), key)['features']


def compute_feature_stats_for_generator(opts, detector_url, detector_kwargs, rel_lo=0, rel_hi=1, batch_size=None,
                                        batch_gen=None, jit=False, max_items=None, **stats_kwargs):
    """Detector features of `max_items` generated images (or of opts.gen_dataset_kwargs' images).
    rel_lo, rel_hi and jit are accepted for plugins written against upstream, and ignored."""
    if max_items is None:
        raise ValueError('compute_feature_stats_for_generator needs max_items (how many images to generate)')
    opts = _with_batch_size(opts, batch_size)
    stream = generated_stream(opts, max_items, tag='generator features', batch_gen=batch_gen)
    detector = get_feature_detector(detector_url, opts.device, opts.num_gpus, opts.rank, opts.verbose())

    def process(images):
        return {'features': detector(to_rgb(images), **detector_kwargs)}

    make = lambda: {'features': FeatureStats(max_items=stream.num_items, **stats_kwargs)}
    return accumulate_stream(opts, stream, process, make)['features']
