"""Training data with StyleGAN2-ADA's dataset interface (research/upstream.md section 1).

`ImageFolderDataset(path, ...)` reads
- a directory of images (searched recursively; png, jpg and anything else Pillow opens),
- a .zip of the same (what `dataset_tool.py` writes: 00000/img00000000.png, ...),
- `builtin:<name>`, procedural data generated on the fly (training/synthetic.py), so a demo or a
  test needs no file. `builtin:blobs32` is 512 RGB 32x32 images in 4 classes; see
  `synthetic.blobs_image`.

Items are `(image, label)`: a uint8 CHW numpy image (grayscale has one channel) and a float32
label vector (length 0 without labels). Labels come from an optional `dataset.json` at the root,
`{"labels": [[relative_path, label], ...]}`: an int label is a class index, returned one-hot; a
list of numbers is returned as a float vector. Other keys of dataset.json (e.g. "cosine", written
by `dataset_tool.py cosine`) are exposed as `dataset.metadata`.

`max_size` keeps a random subset chosen with `random_seed` and `xflip` then appends a mirrored copy
of every image, in that order and with the same random draw as upstream, so a stored
`training_set_kwargs` selects the same images here as there.

`use_labels` is False (no labels), True (labels required: missing ones are an error) or 'auto'
(labels if dataset.json has them). Front ends that probe a dataset to find out whether it has
labels use 'auto'.

Every problem with the data raises `DatasetError`, one sentence naming the file. What is cheap is
checked when the dataset is opened (the first image's size and shape, all labels); every other
image is checked when it is read.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import PIL.Image
import torch

from stylefreq.kwargs import EasyDict
from training import synthetic

BUILTIN_PREFIX = 'builtin:'


class DatasetError(ValueError):
    """Data that cannot be used as given; the message is one sentence naming the file."""


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (with the dot) that Pillow can open."""
    PIL.Image.init()
    return frozenset(ext for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN)


_CHANNEL_NAMES = {1: 'grayscale', 2: 'grayscale+alpha', 3: 'RGB', 4: 'RGBA'}


def describe_shape(shape) -> str:
    """[C, H, W] -> '64x64 RGB' for messages."""
    c, h, w = shape
    return f'{w}x{h} {_CHANNEL_NAMES.get(c, f"{c}-channel")}'


# ---------------------------------------------------------------------------------------------
# Decoding.

# Pillow modes that are 8-bit per channel but not laid out as L/LA/RGB/RGBA; converting them keeps
# every pixel value (a palette image read as-is would give palette indices, not colours).
_MODE_CONVERSIONS = {'1': 'L', 'PA': 'RGBA', 'La': 'LA', 'RGBa': 'RGBA', 'RGBX': 'RGB',
                     'CMYK': 'RGB', 'YCbCr': 'RGB', 'LAB': 'RGB', 'HSV': 'RGB'}


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes -> [H, W, C] uint8 with C = 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA)."""
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            if mode == 'P':
                image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
            elif mode in _MODE_CONVERSIONS:
                image = image.convert(_MODE_CONVERSIONS[mode])
            elif mode not in ('L', 'LA', 'RGB', 'RGBA'):
                raise DatasetError(f'{where} has pixel mode {mode!r} (16-bit or float); only 8-bit grayscale '
                                   f'and colour images are supported.')
            array = np.asarray(image)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt files raise anything from OSError to struct.error
        raise DatasetError(f'{where} is not a readable image ({type(exc).__name__}: {exc}).') from None
    return array[:, :, np.newaxis] if array.ndim == 2 else array


# ---------------------------------------------------------------------------------------------
# Image sources: where the images and dataset.json come from. Shared with dataset_tool.py, which
# reads sources whose images need not agree in size yet.


class ImageSource:
    """A sorted list of image names (POSIX relative paths) plus an optional dataset.json."""

    path: str
    name: str                # dataset name: file name without extension
    image_names: list[str]

    def describe(self, member: str) -> str:
        """How messages name a file of this source."""
        raise NotImplementedError

    def read_image(self, idx: int) -> np.ndarray:
        """Image `idx` as [H, W, C] uint8."""
        raise NotImplementedError

    def read_dataset_json(self) -> dict | None:
        """The parsed dataset.json, or None when there is none."""
        raise NotImplementedError

    def close(self):
        pass

    def _check_not_empty(self):
        if not self.image_names:
            raise DatasetError(f"Dataset '{self.path}' holds no image files (looked for .png, .jpg and the "
                               f"other formats Pillow opens).")

    def _parse_json(self, data: bytes) -> dict:
        where = self.describe('dataset.json')
        try:
            meta = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f'{where} is not valid JSON ({exc}).') from None
        if not isinstance(meta, dict):
            raise DatasetError(f'{where} must hold a JSON object such as {{"labels": [...]}}, '
                               f'not a {type(meta).__name__}.')
        return meta


class FolderSource(ImageSource):
    def __init__(self, path: str):
        self.path = path
        self.name = os.path.basename(os.path.normpath(path))
        exts = image_extensions()
        names = []
        for root, _dirs, files in os.walk(path):
            for fname in files:
                if os.path.splitext(fname)[1].lower() in exts:
                    names.append(os.path.relpath(os.path.join(root, fname), path).replace(os.sep, '/'))
        self.image_names = sorted(names)
        self._check_not_empty()

    def describe(self, member):
        return f"'{os.path.join(self.path, *member.split('/'))}'"

    def _read(self, member: str) -> bytes:
        try:
            with open(os.path.join(self.path, *member.split('/')), 'rb') as f:
                return f.read()
        except OSError as exc:
            raise DatasetError(f'{self.describe(member)} cannot be read ({exc.strerror}).') from None

    def read_image(self, idx):
        member = self.image_names[idx]
        return decode_image(self._read(member), self.describe(member))

    def read_dataset_json(self):
        if not os.path.isfile(os.path.join(self.path, 'dataset.json')):
            return None
        return self._parse_json(self._read('dataset.json'))


class ZipSource(ImageSource):
    def __init__(self, path: str):
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        self._zipfile = None
        self._zip_pid = None
        exts = image_extensions()
        self._members = set(self._zip().namelist())
        # __MACOSX/ holds Finder resource forks ('._img.png') that are not images.
        self.image_names = sorted(m for m in self._members if os.path.splitext(m)[1].lower() in exts
                                  and not m.startswith('__MACOSX/'))
        self._check_not_empty()

    def _zip(self) -> zipfile.ZipFile:
        # Re-open in every process: a handle inherited through fork shares its file offset with the
        # parent, so concurrent reads from DataLoader workers would interleave and corrupt each other.
        if self._zipfile is None or self._zip_pid != os.getpid():
            try:
                self._zipfile = zipfile.ZipFile(self.path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise DatasetError(f"'{self.path}' is not a readable zip archive ({exc}).") from None
            self._zip_pid = os.getpid()
        return self._zipfile

    def describe(self, member):
        return f"'{member}' in '{self.path}'"

    def _read(self, member: str) -> bytes:
        try:
            return self._zip().read(member)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise DatasetError(f'{self.describe(member)} cannot be read from the archive ({exc}).') from None

    def read_image(self, idx):
        member = self.image_names[idx]
        return decode_image(self._read(member), self.describe(member))

    def read_dataset_json(self):
        if 'dataset.json' not in self._members:
            return None
        return self._parse_json(self._read('dataset.json'))

    def close(self):
        if self._zipfile is not None and self._zip_pid == os.getpid():
            self._zipfile.close()
        self._zipfile = None

    def __getstate__(self):
        return dict(self.__dict__, _zipfile=None, _zip_pid=None)


class BuiltinSource(ImageSource):
    """'builtin:<name>': images generated on demand, named like dataset_tool's output."""

    def __init__(self, path: str):
        self.path = path
        self.name = path[len(BUILTIN_PREFIX):]
        try:
            self._data = synthetic.builtin_data(self.name)
        except ValueError as exc:
            raise DatasetError(f'{str(exc)[0].upper()}{str(exc)[1:]}.') from None
        self.image_names = [archive_name(i) for i in range(self._data.count)]

    def describe(self, member):
        return f"'{member}' of '{self.path}'"

    def read_image(self, idx):
        return self._data.image(idx)

    def read_dataset_json(self):
        return {'labels': [[n, self._data.label(i)] for i, n in enumerate(self.image_names)],
                'builtin': self._data.description}


def archive_name(idx: int) -> str:
    """Upstream's layout: 1000 images per folder, '00000/img00000000.png'."""
    s = f'{idx:08d}'
    return f'{s[:5]}/img{s}.png'


def open_image_source(path) -> ImageSource:
    """A folder, a .zip or 'builtin:<name>'; DatasetError when it is none of those or has no images."""
    path = os.fspath(path)
    if path.startswith(BUILTIN_PREFIX):
        return BuiltinSource(path)
    if os.path.isdir(path):
        return FolderSource(path)
    if not os.path.exists(path):
        raise DatasetError(f"Dataset path '{path}' does not exist.")
    if os.path.splitext(path)[1].lower() != '.zip':
        raise DatasetError(f"Dataset path '{path}' is neither a directory nor a .zip archive "
                           f"(nor {synthetic.builtin_names()}).")
    return ZipSource(path)


# ---------------------------------------------------------------------------------------------
# Labels.


def label_table(entries, where: str) -> dict | None:
    """dataset.json's "labels" value -> {relative_path: label}, or None for null/absent."""
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise DatasetError(f'"labels" in {where} must be a list of [relative_path, label] pairs or null, '
                           f'not a {type(entries).__name__}.')
    table = {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise DatasetError(f'{where} has the labels entry {json.dumps(entry)[:60]}, but each entry must be '
                               f'[relative_path, label].')
        table[entry[0].replace('\\', '/')] = entry[1]
    return table


def parse_labels(table: dict, image_names: list[str], where: str) -> np.ndarray:
    """Labels in image order: int64 [N] class indices or float32 [N, D] vectors."""
    kind = first = None
    values = []
    for name in image_names:
        if name not in table:
            raise DatasetError(f"{where} has no label for image '{name}'.")
        value = table[name]
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            this_kind = 'class-index'
        elif (isinstance(value, list) and value
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            this_kind = 'vector'
        else:
            raise DatasetError(f"{where} gives image '{name}' the label {json.dumps(value)[:40]}, but a label "
                               f"must be a class index (an integer >= 0) or a non-empty list of numbers.")
        if kind is None:
            kind, first = this_kind, name
        elif this_kind != kind:
            raise DatasetError(f"{where} mixes label kinds: image '{first}' has a {kind} label but "
                               f"'{name}' has a {this_kind} label.")
        elif kind == 'vector' and len(value) != len(table[first]):
            raise DatasetError(f"{where} gives image '{name}' a label of length {len(value)} but "
                               f"'{first}' one of length {len(table[first])}; vector labels must all "
                               f"have the same length.")
        values.append(value)
    return np.array(values, dtype=np.int64 if kind == 'class-index' else np.float32)


# ---------------------------------------------------------------------------------------------
# Datasets.


class Dataset(torch.utils.data.Dataset):
    """Upstream's dataset base: max_size subset, xflip doubling, labels, and the image contract.

    Subclasses implement `_load_raw_image(raw_idx) -> uint8 CHW` and `_load_raw_labels() ->
    int64 [N] | float32 [N, D] | None`, as in upstream, so datasets written for it plug in here.
    """

    def __init__(self,
        name: str,                  # Name of the dataset (used in run directory names).
        raw_shape,                  # [N, C, H, W] of the raw images.
        max_size: int | None = None,  # Keep a random subset of at most this many images; None = all.
        use_labels=False,           # False, True (labels required) or 'auto' (labels if present).
        xflip: bool = False,        # Append a horizontally mirrored copy of every image.
        random_seed: int = 0,       # Seed of the max_size subset.
    ):
        if use_labels not in (False, True, 'auto'):
            raise ValueError(f"use_labels must be False, True or 'auto', not {use_labels!r}")
        if max_size is not None and max_size < 1:
            raise ValueError(f'max_size must be at least 1 or None, not {max_size!r}')
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._raw_labels = None
        self._label_shape = None

        # The subset is upstream's draw: shuffle all indices with RandomState(random_seed), keep the
        # first max_size, and sort them back so the subset is read in file order.
        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            np.random.RandomState(random_seed).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])

        # xflip after max_size: the mirrored copies are of the same subset.
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    # Subclass hooks ---------------------------------------------------------------------------

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        raise NotImplementedError

    def _load_raw_labels(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self):
        pass

    @property
    def metadata(self) -> dict:
        """Dataset-wide records other than labels (dataset.json's other keys); {} by default."""
        return {}

    # Labels -----------------------------------------------------------------------------------

    def _get_raw_labels(self) -> np.ndarray:
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                if self._use_labels is True:
                    raise DatasetError(f"Dataset '{self._name}' has no labels but use_labels=True.")
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            if (not isinstance(labels, np.ndarray) or labels.shape[0] != self._raw_shape[0]
                    or labels.dtype not in (np.int64, np.float32)
                    or (labels.dtype == np.int64 and (labels.ndim != 1 or np.any(labels < 0)))):
                raise DatasetError(f"Dataset '{self._name}' produced invalid raw labels; expected int64 [N] "
                                   f"class indices >= 0 or float32 [N, D] vectors for N={self._raw_shape[0]}.")
            self._raw_labels = labels
        return self._raw_labels

    # Items ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._raw_idx.size

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        image = self._load_raw_image(self._raw_idx[idx])
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or list(image.shape) != self.image_shape:
            raise DatasetError(f"Dataset '{self._name}' returned a {getattr(image, 'dtype', type(image))} "
                               f"{list(getattr(image, 'shape', []))} image for raw index {self._raw_idx[idx]}, "
                               f"expected uint8 {self.image_shape}.")
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    def get_details(self, idx: int) -> EasyDict:
        raw_idx = int(self._raw_idx[idx])
        return EasyDict(raw_idx=raw_idx, xflip=bool(self._xflip[idx]),
                        raw_label=self._get_raw_labels()[raw_idx].copy())

    # Properties -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def image_shape(self) -> list[int]:
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        return self.image_shape[0]

    @property
    def resolution(self) -> int:
        _c, h, w = self.image_shape
        if h != w:
            raise DatasetError(f"Dataset '{self._name}' has non-square {w}x{h} images.")
        return h

    @property
    def label_shape(self) -> list[int]:
        if self._label_shape is None:
            raw = self._get_raw_labels()
            # One-hot width from the largest class index anywhere in the data, not only in the
            # max_size subset, so every subset of a dataset agrees on c_dim.
            self._label_shape = [int(raw.max()) + 1] if raw.dtype == np.int64 else list(raw.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        return self.label_shape[0]

    @property
    def has_labels(self) -> bool:
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self) -> bool:
        return self._get_raw_labels().dtype == np.int64

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down modules already
            pass

    def __repr__(self):
        labels = f', {self.label_dim} label dims' if self._raw_labels is not None and self.has_labels else ''
        return f"{type(self).__name__}('{self._name}': {len(self)} images, {describe_shape(self.image_shape)}{labels})"


class ImageFolderDataset(Dataset):
    """A folder, a zip, or 'builtin:<name>' (see the module docstring)."""

    def __init__(self,
        path,                       # Directory, .zip, or 'builtin:<name>'.
        resolution: int | None = None,  # Expected resolution (checked, never resized); None = the data's.
        name: str | None = None,    # Dataset name; None = file name without extension.
        **super_kwargs,             # max_size, use_labels, xflip, random_seed: see Dataset.
    ):
        self._path = os.fspath(path)
        self._source = open_image_source(self._path)
        self._dataset_json = None

        first = self._read_image(0)
        c, h, w = first.shape
        where = self._source.describe(self._source.image_names[0])
        if h != w:
            raise DatasetError(f'{where} is {w}x{h} pixels but dataset images must be square '
                               f'(dataset_tool.py --transform=center-crop makes them so).')
        if not synthetic.is_power_of_two(h) or h < 4:
            raise DatasetError(f'{where} is {w}x{h} pixels but the resolution must be a power of two >= 4 '
                               f'(dataset_tool.py --width/--height resizes).')
        if resolution is not None and resolution != h:
            raise DatasetError(f'{where} is {w}x{h} pixels but resolution={resolution} was requested.')
        self._first_where = where
        super().__init__(name=name or self._source.name, raw_shape=[len(self._source.image_names), c, h, w],
                         **super_kwargs)
        if self._use_labels:
            self._get_raw_labels()  # fail now, not in a DataLoader worker an hour into training

    def _read_image(self, raw_idx: int) -> np.ndarray:
        return self._source.read_image(int(raw_idx)).transpose(2, 0, 1)  # HWC -> CHW

    def _load_raw_image(self, raw_idx):
        image = self._read_image(raw_idx)
        if list(image.shape) != self._raw_shape[1:]:
            where = self._source.describe(self._source.image_names[raw_idx])
            raise DatasetError(f'{where} is {describe_shape(image.shape)} but {self._first_where} is '
                               f'{describe_shape(self._raw_shape[1:])}; all images of a dataset must have the '
                               f'same size and channel count (dataset_tool.py converts them).')
        return image

    def _read_dataset_json(self) -> dict | None:
        if self._dataset_json is None:
            # Cached in a list so that "no dataset.json" (None) is cached too.
            self._dataset_json = [self._source.read_dataset_json()]
        return self._dataset_json[0]

    def _load_raw_labels(self):
        meta = self._read_dataset_json()
        where = self._source.describe('dataset.json')
        table = label_table((meta or {}).get('labels'), where)
        if table is None:
            if self._use_labels is True:
                if meta is None:
                    raise DatasetError(f"Dataset '{self._path}' has no dataset.json, so it has no labels, "
                                       f"but use_labels=True.")
                raise DatasetError(f'{where} has no labels ("labels" is null or missing) but use_labels=True.')
            return None
        return parse_labels(table, self._source.image_names, where)

    @property
    def metadata(self) -> dict:
        return {k: v for k, v in (self._read_dataset_json() or {}).items() if k != 'labels'}

    @property
    def path(self) -> str:
        return self._path

    def close(self):
        source = self.__dict__.get('_source')  # absent when __init__ failed early
        if source is not None:
            source.close()
