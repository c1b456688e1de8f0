"""Image datasets in StyleGAN2-ADA's format: a folder or a zip of same-size images plus an optional
`dataset.json` ({"labels": [[relative_path, label], ...] | null, ...other records}), and the
procedural `builtin:<name>` datasets of training/synthetic.py.

Two layers:
  * an ImageSource lists the image files of a folder, zip or built-in set, reads one of them as an
    [H, W, C] uint8 array (alpha kept; dataset_tool.py decides what to do with it) and reads
    dataset.json. It is what dataset_tool.py converts from.
  * Dataset / ImageFolderDataset give the training loop and the metrics what upstream's classes
    give them: CHW uint8 images, float32 labels (class indices become one-hot vectors), an
    optional random subset (`max_size`) and x-flipped copies (`xflip`).

A dataset is hostile until checked: every member is size-checked from its header or stat() before
a byte is read, reads are bounded even when a header lies, decoded images are at most
MAX_RESOLUTION pixels a side, and labels are checked for kind, range and finiteness as soon as the
dataset opens. Every problem is a DatasetError whose message is one sentence naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import stat
import warnings
import zipfile

import numpy as np
import PIL.Image
import torch

from stylefreq.kwargs import EasyDict, register_class
from training import synthetic

BUILTIN_PREFIX = 'builtin:'

# ---------------------------------------------------------------------------------------------
# Limits. They bound what one file can make us read or allocate; nothing a real dataset needs is
# near them.

MAX_RESOLUTION = 8192                                   # pixels per side of any image read
# An uncompressed 8-bit RGBA image of the largest size, plus room for container overhead (PNG row
# filters, zlib stored blocks, TIFF/BMP headers, embedded profiles).
MAX_IMAGE_BYTES = MAX_RESOLUTION * MAX_RESOLUTION * 4 * 101 // 100 + (1 << 20)
MAX_DATASET_JSON_BYTES = 64 << 20                       # ~1.5 million labelled images
MAX_LABEL_DIM = 1 << 20                                 # class indices 0..2^20-1; vector width
# Deflate cannot shrink data by more than about 1032:1, so a header claiming more is a lie.
MAX_DEFLATE_RATIO = 1100

# Decoders for formats that only decode pixels. Pillow would otherwise pick a plugin by content,
# and some (EPS/PS) hand the file to an external program.
SAFE_FORMATS = ('PNG', 'JPEG', 'BMP', 'DIB', 'GIF', 'TIFF', 'WEBP', 'PPM', 'TGA', 'JPEG2000', 'ICO',
                'PCX', 'SGI', 'QOI')

# Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; decode_image turns the warning
# into an error too, so nothing larger than MAX_RESOLUTION^2 pixels is ever decoded.
PIL.Image.MAX_IMAGE_PIXELS = MAX_RESOLUTION * MAX_RESOLUTION


class DatasetError(ValueError):
    """A dataset cannot be used as asked; the message is one sentence naming the file."""

    def __init__(self, message=''):
        super().__init__(_original_sentence(str(message), type(self)))


def _original_sentence(text: str, cls: type) -> str:
    # torch's DataLoader re-raises a worker's exception as `cls(text)` where text is the whole
    # worker traceback; the sentence users need is what the worker raised.
    if not text.startswith(f'Caught {cls.__name__} '):
        return text
    marker = f'{cls.__module__}.{cls.__qualname__}: '
    for line in reversed(text.splitlines()):
        if line.startswith(marker):
            return line[len(marker):]
    return text


# ---------------------------------------------------------------------------------------------
# Image files.

_CHANNEL_NAMES = {1: 'grayscale', 2: 'grayscale+alpha', 3: 'RGB', 4: 'RGBA'}

# Pillow modes read as one of L, LA, RGB, RGBA (8 bits per channel).
_MODE_TARGETS = {
    'L': 'L', 'LA': 'LA', 'RGB': 'RGB', 'RGBA': 'RGBA',
    '1': 'L', 'La': 'LA', 'PA': 'RGBA', 'RGBa': 'RGBA',
    'RGBX': 'RGB', 'CMYK': 'RGB', 'YCbCr': 'RGB', 'LAB': 'RGB', 'HSV': 'RGB',
}
_DEEP_MODES = {'I;16': 16, 'I;16L': 16, 'I;16B': 16, 'I;16N': 16, 'I': 32, 'F': 32}


def image_extensions() -> frozenset:
    """Lower-case file extensions (with the dot) that count as images in a folder or zip."""
    return frozenset(ext for ext, fmt in PIL.Image.registered_extensions().items() if fmt in SAFE_FORMATS)


def describe_shape(shape) -> str:
    """(C, H, W) -> '256x256 RGB'."""
    channels, height, width = shape
    return f'{width}x{height} {_CHANNEL_NAMES.get(channels, f"{channels}-channel")}'


def archive_name(idx: int) -> str:
    """Member name of image `idx` in upstream's layout: 00000/img00000000.png, 00001/img00001000.png, ..."""
    return f'{idx // 1000:05d}/img{idx:08d}.png'


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes -> [H, W, C] uint8 with C in 1..4 (palettes expanded, alpha kept)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(io.BytesIO(data), formats=SAFE_FORMATS) as image:
                width, height = image.size
                if max(width, height) > MAX_RESOLUTION:
                    raise DatasetError(f'{where} is {width}x{height} pixels, more than the {MAX_RESOLUTION} '
                                       f'pixels per side that stylefreq reads.')
                image.load()
                pixels = _to_8bit_array(image, where)
    except DatasetError:
        raise
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning):
        raise DatasetError(f'{where} is larger than {MAX_RESOLUTION}x{MAX_RESOLUTION} pixels, the most stylefreq '
                           f'reads.') from None
    except Exception as exc:  # a decoder fed hostile bytes can fail in any way; all mean "unreadable"
        detail = ' '.join(f'{type(exc).__name__}: {exc}'.split())
        raise DatasetError(f'{where} is not a readable image ({detail}).') from None
    return pixels.reshape(pixels.shape[0], pixels.shape[1], -1)


def _to_8bit_array(image: PIL.Image.Image, where: str) -> np.ndarray:
    mode = image.mode
    if mode in _DEEP_MODES:
        raise DatasetError(f'{where} is a {_DEEP_MODES[mode]}-bit image (Pillow mode {mode}); datasets hold '
                           f'8-bit grayscale or RGB images.')
    if mode == 'P':
        target = 'RGBA' if 'transparency' in image.info else 'RGB'
    else:
        target = _MODE_TARGETS.get(mode)
    if target is None:
        raise DatasetError(f'{where} has the unsupported Pillow mode {mode}; datasets hold 8-bit grayscale or '
                           f'RGB images.')
    if target != mode:
        image = image.convert(target)
    return np.asarray(image, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Sources: where the image files come from.


def _read_capped(stream, cap: int) -> bytes | None:
    """Up to `cap` bytes of `stream`; None when it holds more (whatever any header said)."""
    data = stream.read(cap + 1)
    return None if len(data) > cap else data


def _json_object(data: bytes, where: str) -> dict:
    try:
        meta = json.loads(data.decode('utf-8'))
    except RecursionError:
        raise DatasetError(f'{where} is not valid JSON (nested too deeply).') from None
    except ValueError as exc:   # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise DatasetError(f'{where} is not valid JSON ({exc}).') from None
    if not isinstance(meta, dict):
        raise DatasetError(f'{where} must hold a JSON object such as {{"labels": ...}}, not a '
                           f'{type(meta).__name__}.')
    return meta


class ImageSource:
    """The image files of one dataset location, in sorted relative-path order (upstream's order).

    `image_names`: member names with '/' separators; `read_image(idx)`: [H, W, C] uint8;
    `read_dataset_json()`: the parsed dataset.json, or None when there is none;
    `describe(member)`: how messages name a member.
    """

    path: str
    image_names: list

    def describe(self, member: str) -> str:
        return f"'{member}' in '{self.path}'"

    def read_image(self, idx: int) -> np.ndarray:
        name = self.image_names[idx]
        where = self.describe(name)
        return decode_image(self._read_member(name, MAX_IMAGE_BYTES, where), where)

    def read_dataset_json(self) -> dict | None:
        if not self._has_member('dataset.json'):
            return None
        where = self.describe('dataset.json')
        return _json_object(self._read_member('dataset.json', MAX_DATASET_JSON_BYTES, where), where)

    def close(self):
        pass

    # What a file-backed source provides.
    def _has_member(self, member: str) -> bool:
        raise NotImplementedError

    def _read_member(self, member: str, cap: int, where: str) -> bytes:
        raise NotImplementedError

    def _require_images(self):
        if not self.image_names:
            known = ', '.join(sorted(image_extensions()))
            raise DatasetError(f"'{self.path}' holds no image files (looked for {known}).")


class FolderSource(ImageSource):
    """Every image file under a directory (symlinked directories are not followed, as upstream)."""

    def __init__(self, path: str):
        self.path = path
        extensions = image_extensions()
        names = []
        for parent, _dirs, files in os.walk(path):
            rel = os.path.relpath(parent, path)
            for file in files:
                if os.path.splitext(file)[1].lower() in extensions:
                    names.append(file if rel == '.' else '/'.join([*rel.split(os.sep), file]))
        self.image_names = sorted(names)
        self._require_images()

    def _file(self, member: str) -> str:
        return os.path.join(self.path, *member.split('/'))

    def describe(self, member: str) -> str:
        return f"'{self._file(member)}'"

    def _has_member(self, member: str) -> bool:
        return os.path.isfile(self._file(member))

    def _read_member(self, member: str, cap: int, where: str) -> bytes:
        file = self._file(member)
        try:
            info = os.stat(file)
            if not stat.S_ISREG(info.st_mode):
                raise DatasetError(f'{where} is not a regular file.')
            if info.st_size > cap:
                raise DatasetError(f'{where} is {info.st_size:,} bytes, more than the {cap:,} bytes allowed for it.')
            with open(file, 'rb') as f:
                data = _read_capped(f, cap)
        except OSError as exc:
            raise DatasetError(f'{where} cannot be read ({exc.strerror or exc}).') from None
        if data is None:
            raise DatasetError(f'{where} grew past the {cap:,} bytes allowed for it while being read.')
        return data


class ZipSource(ImageSource):
    """Every image member of a zip archive. The archive is opened lazily and once per process: a
    handle inherited through fork shares its file offset with the parent."""

    def __init__(self, path: str):
        self.path = path
        self._archive = None
        self._owner_pid = None
        try:
            infos = self._zip().infolist()
        except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
            self.close()
            raise DatasetError(f"'{path}' is not a readable zip archive ({exc}).") from None
        self._members = {info.filename: info for info in infos if not info.is_dir()}
        extensions = image_extensions()
        self.image_names = sorted(name for name in self._members
                                  if os.path.splitext(name)[1].lower() in extensions)
        self._require_images()

    def _zip(self) -> zipfile.ZipFile:
        if self._archive is None or self._owner_pid != os.getpid():
            self._archive = zipfile.ZipFile(self.path)
            self._owner_pid = os.getpid()
        return self._archive

    def _has_member(self, member: str) -> bool:
        return member in self._members

    def _read_member(self, member: str, cap: int, where: str) -> bytes:
        info = self._members[member]
        _check_zip_header(info, cap, where)
        try:
            with self._zip().open(info) as f:
                data = _read_capped(f, cap)
        except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
            # zlib/CRC errors, unsupported compression methods, encryption
            detail = ' '.join(f'{type(exc).__name__}: {exc}'.split())
            raise DatasetError(f'{where} cannot be extracted ({detail}).') from None
        if data is None or len(data) != info.file_size:
            raise DatasetError(f'{where} does not hold the {info.file_size:,} bytes its zip header declares.')
        return data

    def close(self):
        if self._archive is not None and self._owner_pid == os.getpid():
            self._archive.close()
        self._archive = None

    def __getstate__(self):
        return dict(self.__dict__, _archive=None, _owner_pid=None)


def _check_zip_header(info: zipfile.ZipInfo, cap: int, where: str):
    """Refuse a member from its central-directory entry, before any decompression."""
    size, packed = info.file_size, info.compress_size
    if info.flag_bits & 0x1:
        raise DatasetError(f'{where} is encrypted.')
    if size > cap:
        raise DatasetError(f'{where} declares {size:,} bytes uncompressed, more than the {cap:,} bytes allowed '
                           f'for it.')
    if info.compress_type == zipfile.ZIP_STORED and packed != size:
        raise DatasetError(f'{where} is stored uncompressed but its zip header gives two sizes ({packed:,} and '
                           f'{size:,} bytes).')
    if info.compress_type == zipfile.ZIP_DEFLATED and size > MAX_DEFLATE_RATIO * max(packed, 1):
        raise DatasetError(f'{where} declares a compression ratio of {size / max(packed, 1):,.0f}:1, more than '
                           f'deflate can reach.')


class BuiltinSource(ImageSource):
    """A procedural dataset ('builtin:blobs32'): images in upstream's archive layout, class labels and
    the generator's description in dataset.json."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._data = synthetic.builtin_data(path[len(BUILTIN_PREFIX):])
        except ValueError as exc:
            raise DatasetError(f'{exc}.') from None
        self.image_names = [archive_name(i) for i in range(self._data.count)]

    def read_image(self, idx: int) -> np.ndarray:
        return self._data.image(idx)

    def read_dataset_json(self) -> dict:
        labels = [[name, self._data.label(i)] for i, name in enumerate(self.image_names)]
        return {'labels': labels, 'builtin': dict(self._data.description)}


def open_image_source(path) -> ImageSource:
    """The ImageSource for a folder, a .zip archive or 'builtin:<name>'."""
    given = path
    try:
        path = os.fspath(path)
    except TypeError:
        path = None
    if not isinstance(path, str):
        raise DatasetError(f'Dataset path {repr(given)[:80]} is not a text path.')
    if path.startswith(BUILTIN_PREFIX):
        return BuiltinSource(path)
    if not os.path.exists(path):
        raise DatasetError(f"Dataset path '{path}' does not exist.")
    if os.path.isdir(path):
        return FolderSource(path)
    if not os.path.isfile(path):     # a FIFO or device would block or never end
        raise DatasetError(f"Dataset path '{path}' is neither a directory nor a regular file.")
    if os.path.splitext(path)[1].lower() == '.zip':
        return ZipSource(path)
    raise DatasetError(f"Dataset path '{path}' is neither a directory nor a .zip archive.")


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
        return np.ascontiguousarray(mirrored), self.get_label(idx)

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
