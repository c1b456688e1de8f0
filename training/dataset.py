"""Image datasets in StyleGAN2-ADA's format: a folder or a zip of same-size images plus an optional
`dataset.json` ({"labels": [[relative_path, label], ...] | null, ...other records}), and the
procedural `builtin:<name>` datasets.

Dataset / ImageFolderDataset give the training loop and the metrics what upstream's classes give
them: CHW uint8 images, float32 labels (class indices become one-hot vectors), an optional random
subset (`max_size`) and x-flipped copies (`xflip`). Images come from training/image_sources.py;
labels are checked for kind, range and finiteness as soon as the dataset opens. Every problem is a
DatasetError whose message is one sentence naming the file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os

import numpy as np
import torch

from stylefreq.kwargs import EasyDict, register_class
from training import synthetic
from training.image_sources import (BUILTIN_PREFIX, MAX_LABEL_DIM, MAX_RESOLUTION, DatasetError, describe_shape,
                                    open_image_source)


# ---------------------------------------------------------------------------------------------
# Labels in dataset.json.


def _json_text(value, limit=60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def label_table(entries, where: str) -> dict | None:
    """dataset.json's "labels" -> {relative_path: raw JSON label}, or None when it is null."""
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise DatasetError(f'"labels" in {where} must be a list of [relative_path, label] entries or null, not a '
                           f'{type(entries).__name__}.')
    table = {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise DatasetError(f'{where}: each entry must be [relative_path, label], but one is {_json_text(entry)}.')
        name = entry[0].replace('\\', '/')
        if name in table:
            raise DatasetError(f"{where} gives image '{name}' more than one label.")
        table[name] = entry[1]
    return table


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _class_index(value, name: str, where: str) -> int:
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise DatasetError(f"{where}: the class index of '{name}' is {_json_text(value)}, not a whole number.")
        value = int(value)
    if not 0 <= value < MAX_LABEL_DIM:
        shown = value if abs(value) < 10 ** 30 else f'a {len(str(abs(value)))}-digit number'
        raise DatasetError(f"{where}: the class index of '{name}' is {shown}, outside 0..{MAX_LABEL_DIM - 1}.")
    return value


def _label_vector(value: list, name: str, where: str) -> list:
    if not 1 <= len(value) <= MAX_LABEL_DIM:
        raise DatasetError(f"{where}: the label vector of '{name}' has length {len(value)}; it must have 1 to "
                           f"{MAX_LABEL_DIM} numbers.")
    if not all(_is_number(v) for v in value):
        raise DatasetError(f"{where}: the label vector of '{name}' holds something other than numbers.")
    if not all(math.isfinite(v) for v in value):   # also catches ints too large for a float
        raise DatasetError(f"{where}: the label vector of '{name}' holds a non-finite number (NaN or infinity).")
    return value


def parse_labels(table: dict, image_names: list, where: str) -> np.ndarray:
    """The labels of `image_names` from a label_table: int64 [N] class indices, or float32 [N, D]
    vectors. Checks that every image has one, of one kind, in range and finite."""
    labels, kind, first_name = [], None, None
    for name in image_names:
        if name not in table:
            raise DatasetError(f"{where} has no label for image '{name}'.")
        value = table[name]
        this_kind = 'class' if _is_number(value) else 'vector' if isinstance(value, list) else None
        if this_kind is None:
            raise DatasetError(f"{where}: the label of '{name}', {_json_text(value)}, is neither a class index "
                               f"(an integer) nor a list of numbers.")
        if kind is None:
            kind, first_name = this_kind, name
        elif this_kind != kind:
            raise DatasetError(f"{where} mixes label kinds: '{first_name}' has a {kind} label but '{name}' has a "
                               f"{this_kind} label.")
        if kind == 'class':
            labels.append(_class_index(value, name, where))
            continue
        labels.append(_label_vector(value, name, where))
        if len(value) != len(labels[0]):
            raise DatasetError(f"{where}: the label vector of '{name}' has length {len(value)} but that of "
                               f"'{first_name}' has length {len(labels[0])}; all must be equally long.")
    if kind == 'class':
        return np.array(labels, dtype=np.int64)
    with np.errstate(over='ignore'):
        vectors = np.array(labels, dtype=np.float32).reshape(len(labels), -1)
    if not np.isfinite(vectors).all():
        raise DatasetError(f'{where} has a label value too large for float32.')
    return vectors


# ---------------------------------------------------------------------------------------------
# Datasets.


def _check_label_array(labels, count: int, owner: str) -> np.ndarray:
    """Raw labels from a subclass: int [N] class indices or float [N, D] vectors, in range."""
    labels = np.asarray(labels)
    if labels.shape[:1] != (count,):
        raise DatasetError(f'{owner}: expected labels for {count} images, got an array of shape {list(labels.shape)}.')
    if np.issubdtype(labels.dtype, np.integer) and labels.ndim == 1:
        if count and not (labels.min() >= 0 and labels.max() < MAX_LABEL_DIM):
            raise DatasetError(f'{owner}: class indices must lie in 0..{MAX_LABEL_DIM - 1}.')
        return labels.astype(np.int64)
    if np.issubdtype(labels.dtype, np.floating) and labels.ndim == 2 and labels.shape[1] <= MAX_LABEL_DIM:
        labels = labels.astype(np.float32)
        if not np.isfinite(labels).all():
            raise DatasetError(f'{owner}: label vectors must be finite.')
        return labels
    raise DatasetError(f'{owner}: labels must be integer class indices [N] or float vectors [N, D], got '
                       f'{labels.dtype} of shape {list(labels.shape)}.')


def _optional_int(value, what: str, owner: str, low: int, high: int | None = None):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or \
            (high is not None and value > high):
        bound = f'{low}..{high}' if high is not None else f'>= {low}'
        raise DatasetError(f'{owner}: {what}={value!r} must be an integer {bound}.')
    return int(value)


class Dataset(torch.utils.data.Dataset):
    """Base of the datasets the training loop and the metrics use (upstream's interface).

    Subclasses describe raw images [C, H, W] uint8 by index through `_load_raw_image(raw_idx)`
    and, when `use_labels`, raw labels through `_load_raw_labels()` (int [N] class indices or
    float [N, D] vectors). This class picks the optional subset (`max_size`, drawn with
    `random_seed`), appends x-flipped copies (`xflip`) and turns class indices into one-hot labels.
    """

    def __init__(self, name: str, raw_shape, max_size: int | None = None, use_labels=False, xflip: bool = False,
                 random_seed: int = 0):
        self._name = name
        self._raw_shape = [int(v) for v in raw_shape]
        self._use_labels = bool(use_labels)
        num_raw = self._raw_shape[0]
        max_size = _optional_int(max_size, 'max_size', self._where(), 1)
        seed = _optional_int(random_seed, 'random_seed', self._where(), 0, 2 ** 32 - 1) or 0

        # Upstream's subset: shuffle all indices with the seed, keep the first max_size, in order.
        chosen = np.arange(num_raw, dtype=np.int64)
        if max_size is not None and max_size < num_raw:
            np.random.RandomState(seed).shuffle(chosen)
            chosen = np.sort(chosen[:max_size])
        flipped = np.zeros(chosen.size, dtype=np.uint8)
        if xflip:
            chosen = np.concatenate([chosen, chosen])
            flipped = np.concatenate([flipped, np.ones_like(flipped)])
        self._raw_idx = chosen
        self._xflip = flipped

        # Labels are read and checked now, so a bad dataset.json fails when the dataset opens.
        if self._use_labels:
            self._raw_labels = _check_label_array(self._load_raw_labels(), num_raw, self._where())
        else:
            self._raw_labels = np.zeros([num_raw, 0], dtype=np.float32)
        self._onehot = self._raw_labels.ndim == 1     # class indices (int64), expanded by get_label
        if self._onehot:
            self._label_width = int(self._raw_labels.max(initial=-1)) + 1
        else:
            self._label_width = int(self._raw_labels.shape[1])

    # -- what subclasses provide
    def _where(self) -> str:
        """How messages name this dataset."""
        return f'dataset {self._name!r}'

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        """Raw image `raw_idx` as uint8 [C, H, W]."""
        raise NotImplementedError(f'{type(self).__name__} does not read images')

    def _load_raw_labels(self):
        """int [N] class indices or float [N, D] label vectors of all raw images."""
        raise NotImplementedError(f'{type(self).__name__} has no labels')

    def close(self):
        """Release open files (a dataset reopens them when read again)."""

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter shutdown modules may be gone already
            self.close()

    # -- items
    def __len__(self) -> int:
        return int(self._raw_idx.size)

    def __getitem__(self, idx: int):
        raw_idx = int(self._raw_idx[idx])
        pixels = self._load_raw_image(raw_idx)
        expected = tuple(self._raw_shape[1:])
        if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.shape == expected):
            got = f'{pixels.dtype} {list(pixels.shape)}' if isinstance(pixels, np.ndarray) else type(pixels).__name__
            raise DatasetError(f'{self._where()}: image {raw_idx} is {got}, expected uint8 {list(expected)}.')
        mirrored = np.flip(pixels, axis=2) if self._xflip[idx] else pixels
        # Contiguous and writable (a decoded image may be a read-only view; torch warns about those).
        return np.require(mirrored, requirements=['C', 'W']), self.get_label(idx)

    def _get_raw_labels(self) -> np.ndarray:
        return self._raw_labels

    def get_label(self, idx: int) -> np.ndarray:
        """float32 [label_dim]: the vector, or the one-hot encoding of the class index."""
        raw = self._raw_labels[self._raw_idx[idx]]
        if not self._onehot:
            return raw.copy()
        label = np.zeros([self._label_width], dtype=np.float32)
        label[int(raw)] = 1.0
        return label

    def get_details(self, idx: int) -> EasyDict:
        raw_idx = int(self._raw_idx[idx])
        return EasyDict(raw_idx=raw_idx, xflip=bool(self._xflip[idx]), raw_label=self._raw_labels[raw_idx].copy())

    # -- shapes: images [C, H, W] (square), labels [label_dim]
    name = property(lambda self: self._name)
    image_shape = property(lambda self: list(self._raw_shape[1:]))
    num_channels = property(lambda self: self._raw_shape[1])
    resolution = property(lambda self: self._raw_shape[2])
    label_shape = property(lambda self: [self._label_width])
    label_dim = property(lambda self: self._label_width)
    has_labels = property(lambda self: self._label_width > 0)
    has_onehot_labels = property(lambda self: self._onehot)

    def __repr__(self):
        return f'{type(self).__name__}({self._name!r}, {len(self)} images of {list(self._raw_shape[1:])})'


@register_class
class ImageFolderDataset(Dataset):
    """A folder, zip or 'builtin:<name>' dataset (`training_set_kwargs.class_name`).

    path: folder, .zip or builtin:NAME. resolution: the expected image size (None: the first
    image's). name: defaults to the file or folder name without extension. use_labels: True,
    False or 'auto' (labels when dataset.json has them). Other arguments as Dataset.

    Opening reads the first image (its size and channel count must suit a GAN: square, a power
    of two from 4 to MAX_RESOLUTION, grayscale or RGB) and dataset.json (labels are checked now);
    every later image is checked against the first when it is read.
    """

    def __init__(self, path, resolution: int | None = None, name: str | None = None, use_labels=False,
                 **super_kwargs):
        self._source = open_image_source(path)
        self._path = self._source.path
        if name is None:
            base = self._path[len(BUILTIN_PREFIX):] if self._path.startswith(BUILTIN_PREFIX) else \
                os.path.basename(self._path.rstrip('/' + os.sep))
            name = os.path.splitext(base)[0]
        if not isinstance(name, str):
            raise DatasetError(f'{self._where()}: name={name!r} must be a string.')
        resolution = _optional_int(resolution, 'resolution', self._where(), 1)
        if use_labels not in (True, False, 'auto', 0, 1):
            raise DatasetError(f"{self._where()}: use_labels={use_labels!r} must be True, False or 'auto'.")

        self._first_where = self._source.describe(self._source.image_names[0])
        first = self._source.read_image(0)
        self._first_shape = _check_first_image(first, self._first_where, resolution)
        self._meta = self._source.read_dataset_json()
        if use_labels == 'auto':
            use_labels = self._meta is not None and self._meta.get('labels') is not None
        raw_shape = [len(self._source.image_names), *self._first_shape]
        super().__init__(name=name, raw_shape=raw_shape, use_labels=use_labels, **super_kwargs)

    @property
    def path(self) -> str:
        return self._path

    def _where(self) -> str:
        return f"'{self._path}'"

    @property
    def metadata(self) -> dict:
        """dataset.json's records other than "labels" (e.g. "cosine", "builtin", "freq_shift")."""
        return {k: v for k, v in (self._meta or {}).items() if k != 'labels'}

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        image = self._source.read_image(raw_idx)
        shape = (image.shape[2], image.shape[0], image.shape[1])
        if shape != self._first_shape:
            where = self._source.describe(self._source.image_names[raw_idx])
            raise DatasetError(f'{where} is {describe_shape(shape)} but {self._first_where} is '
                               f'{describe_shape(self._first_shape)}; all images of a dataset must have the same '
                               f'size and channel count.')
        return image.transpose(2, 0, 1)

    def _load_raw_labels(self) -> np.ndarray:
        where = self._source.describe('dataset.json')
        if self._meta is None:
            raise DatasetError(f"'{self._path}' has no dataset.json, but use_labels=True asks for labels.")
        table = label_table(self._meta.get('labels'), where)
        if table is None:
            raise DatasetError(f'{where} has no labels ("labels" is null), but use_labels=True asks for them.')
        return parse_labels(table, self._source.image_names, where)

    def close(self):
        source = self.__dict__.get('_source')
        if source is not None:
            source.close()


def _check_first_image(image: np.ndarray, where: str, resolution: int | None) -> tuple:
    """(C, H, W) of the first image, if a GAN can be trained on images like it."""
    height, width, channels = image.shape
    if channels not in (1, 3):
        raise DatasetError(f'{where} is {describe_shape((channels, height, width))}, but dataset images must be '
                           f'grayscale or RGB (dataset_tool.py drops an alpha channel that is fully opaque).')
    if height != width:
        raise DatasetError(f'{where} is {width}x{height} pixels, but dataset images must be square.')
    if not (synthetic.is_power_of_two(width) and 4 <= width <= MAX_RESOLUTION):
        raise DatasetError(f'{where} is {width}x{height} pixels, but the resolution must be a power of two from 4 '
                           f'to {MAX_RESOLUTION}.')
    if resolution is not None and width != resolution:
        raise DatasetError(f'{where} is {width}x{height} pixels, but resolution={resolution} was asked for.')
    return channels, height, width
