"""Running statistics of feature rows (FeatureStats) and their file format.

Attribute names are upstream's (capture_all, capture_mean_cov, max_items, num_items, num_features,
all_features, raw_mean, raw_cov). The cache file is an uncompressed .npz of a JSON header and
arrays, read without pickle and validated: member sizes from the zip directory before anything
is read (compressed members refused: no decompression bombs), then dtypes, shapes and
finiteness. Anything off reads as None, and the caller recomputes and replaces the file.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import torch

from stylefreq import files


class FeatureStats:
    """Statistics of a stream of feature rows [N, F]: every row kept (`capture_all`, float32), and/or
    float64 running sums for the mean (`capture_mean`) and the second moment (`capture_mean_cov`,
    which implies the mean). `capture_mean` alone suits wide rows such as power spectra, whose
    covariance would be huge and unused. At most `max_items` rows are taken.

    Attributes keep the names StyleGAN2-ADA's statistics use: capture_all, capture_mean_cov,
    max_items, num_items, num_features, all_features, raw_mean, raw_cov.
    """

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None, capture_mean=False):
        self.capture_all, self.capture_mean_cov = capture_all, capture_mean_cov
        self.capture_mean = bool(capture_mean or capture_mean_cov)
        self.max_items = max_items
        self.num_items, self.num_features = 0, None
        self.all_features = self.raw_mean = self.raw_cov = None

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def _start(self, width):
        """Allocate the sums on the first rows; later rows must have the same width."""
        if self.num_features is not None:
            if width != self.num_features:
                raise ValueError(f'feature rows changed width from {self.num_features} to {width}')
            return
        self.num_features, self.all_features = width, []
        self.raw_mean = np.zeros(width) if self.capture_mean else None
        self.raw_cov = np.zeros((width, width)) if self.capture_mean_cov else None

    def append(self, rows):
        """Take rows [N, F] (array-like) up to max_items in total."""
        rows = np.asarray(rows)
        if rows.ndim != 2:
            raise ValueError(f'feature rows must be [N, F], got shape {list(rows.shape)}')
        room = rows.shape[0] if self.max_items is None else max(0, self.max_items - self.num_items)
        rows = rows[:room]
        self._start(rows.shape[1])
        if len(rows) == 0:
            return
        self.num_items += len(rows)
        if self.capture_all:
            self.all_features.append(rows.astype(np.float32))
        if self.capture_mean:
            wide = rows.astype(np.float64)
            np.add(self.raw_mean, wide.sum(axis=0), out=self.raw_mean)
            if self.capture_mean_cov:
                np.add(self.raw_cov, np.matmul(wide.T, wide), out=self.raw_cov)

    def get_all(self) -> np.ndarray:
        """Every row taken, float32 [num_items, F]."""
        if not self.capture_all:
            raise ValueError('these statistics did not keep their rows (capture_all=False)')
        parts = self.all_features or [np.zeros((0, self.num_features or 0), np.float32)]
        if len(parts) > 1:
            parts = self.all_features = [np.concatenate(parts)]
        return parts[0]

    def get_all_torch(self) -> torch.Tensor:
        return torch.from_numpy(self.get_all())

    def get_mean(self) -> np.ndarray:
        if not (self.capture_mean and self.num_items):
            raise ValueError('no mean to give: capture_mean is off or no rows were taken')
        return self.raw_mean / self.num_items

    def get_mean_cov(self):
        """(mean, covariance), float64; the covariance is the biased one, E[x x^T] - mean mean^T."""
        if not (self.capture_mean_cov and self.num_items):
            raise ValueError('no covariance to give: capture_mean_cov is off or no rows were taken')
        mean = self.get_mean()
        return mean, self.raw_cov / self.num_items - np.outer(mean, mean)

    def save(self, path):
        """Write these statistics to `path` in the cache format (`save_stats_file`)."""
        save_stats_file(path, {'stats': self})

    @staticmethod
    def load(path):
        """Statistics written by `save` (read without pickle)."""
        loaded = load_stats_file(path)
        if loaded is None or 'stats' not in loaded:
            raise ValueError(f'{path} is not a statistics file written by FeatureStats.save')
        return loaded['stats']


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


def same_kind(loaded: dict, fresh: dict) -> bool:
    """Loaded statistics answer the same question as freshly made ones (names, capture flags, limits)."""
    if set(loaded) != set(fresh):
        return False
    return all(getattr(loaded[k], f) == getattr(fresh[k], f)
               for k in fresh for f in ('capture_all', 'capture_mean_cov', 'capture_mean', 'max_items'))
