"""Reading the images of a dataset: a folder, a zip, or a procedural `builtin:<name>` set
(training/synthetic.py), one image at a time as an [H, W, C] uint8 array (alpha kept: dataset_tool.py
decides what to do with it), plus the raw dataset.json.

A dataset is hostile until checked: every member is size-checked from its header or stat() before a
byte is read, reads are bounded even when a header lies, Pillow may only use pixel decoders, and a
decoded image is at most MAX_RESOLUTION pixels a side. Every problem is a DatasetError whose
message is one sentence naming the file.
"""

from __future__ import annotations

import io
import json
import os
import stat
import warnings
import zipfile

import numpy as np
import PIL.Image

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
