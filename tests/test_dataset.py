"""Datasets (training/dataset.py), the synthetic generators (training/synthetic.py) and
dataset_tool.py: formats written here with Pillow and read back, upstream's subset/flip semantics,
every user-facing error (its message must name the file), and the spectra of the cosine and
frequency-shifted datasets checked with numpy's FFT."""

import io
import json
import math
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]

import dataset_tool
from training import image_sources, synthetic
from training.dataset import DatasetError, ImageFolderDataset

# ---------------------------------------------------------------------------------------------
# Helpers that write datasets the way users have them.


def random_images(n, size=8, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (size, size) if channels == 1 else (size, size, channels)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def png_bytes(array, fmt='png'):
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def write_dataset(path, files, labels=None, dataset_json=None):
    """files: {relative_name: array or raw bytes}; a .zip path gives a zip, anything else a folder."""
    path = Path(path)
    entries = {name: (png_bytes(data) if isinstance(data, np.ndarray) else data) for name, data in files.items()}
    if labels is not None or dataset_json is not None:
        meta = dataset_json if dataset_json is not None else {'labels': labels}
        entries['dataset.json'] = meta.encode() if isinstance(meta, str) else json.dumps(meta).encode()
    if path.suffix == '.zip':
        with zipfile.ZipFile(path, 'w') as z:
            for name, data in entries.items():
                z.writestr(name, data)
    else:
        for name, data in entries.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
    return str(path)


def chw(image):
    return image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)


def run_tool(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args], catch_exceptions=False)


# ---------------------------------------------------------------------------------------------
# Reading folders and zips.


@pytest.mark.parametrize('kind', ['folder', 'zip'])
def test_folder_and_zip_read_back(tmp_path, kind):
    images = random_images(5)
    names = ['b/img1.png', 'a/img2.png', 'a/img0.png', 'c.png', 'a/z/img3.png']
    files = dict(zip(names, images))
    files['notes.txt'] = b'not an image'
    path = write_dataset(tmp_path / ('mydata.zip' if kind == 'zip' else 'mydata'), files)

    ds = ImageFolderDataset(path)
    assert ds.name == 'mydata'
    assert len(ds) == 5
    assert ds.image_shape == [3, 8, 8] and ds.num_channels == 3 and ds.resolution == 8
    assert ds.label_shape == [0] and ds.label_dim == 0 and not ds.has_labels and not ds.has_onehot_labels
    # Images come in sorted relative-path order (upstream's order, so subsets agree).
    order = sorted(names)
    for i, name in enumerate(order):
        image, label = ds[i]
        assert image.dtype == np.uint8 and image.flags.c_contiguous
        np.testing.assert_array_equal(image, chw(files[name]))
        assert label.dtype == np.float32 and label.shape == (0,)
    assert ImageFolderDataset(path, resolution=8).resolution == 8
    assert ImageFolderDataset(path, name='other').name == 'other'


def test_grayscale_palette_and_jpeg(tmp_path):
    gray = random_images(2, channels=1)
    d = write_dataset(tmp_path / 'gray', {'0.png': gray[0], '1.png': gray[1]})
    ds = ImageFolderDataset(d)
    assert ds.num_channels == 1 and ds.image_shape == [1, 8, 8]
    np.testing.assert_array_equal(ds[1][0], chw(gray[1]))

    # A palette PNG must give its colours, not palette indices.
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:4] = [200, 10, 30]
    rgb[4:] = [5, 250, 90]
    buf = io.BytesIO()
    PIL.Image.fromarray(rgb).convert('P', palette=PIL.Image.Palette.ADAPTIVE, colors=2).save(buf, format='png')
    d = write_dataset(tmp_path / 'pal', {'p.png': buf.getvalue()})
    np.testing.assert_array_equal(ImageFolderDataset(d)[0][0], chw(rgb))

    d = write_dataset(tmp_path / 'jpg', {'x.jpg': png_bytes(random_images(1)[0], 'jpeg'), 'y.JPEG':
                                         png_bytes(random_images(1, seed=1)[0], 'jpeg')})
    ds = ImageFolderDataset(d)
    assert len(ds) == 2 and ds.image_shape == [3, 8, 8]


def test_int_labels_are_one_hot(tmp_path):
    images = random_images(4)
    names = [f'{i}.png' for i in range(4)]
    classes = [2, 0, 4, 2]
    path = write_dataset(tmp_path / 'cls.zip', dict(zip(names, images)),
                         labels=[[n, c] for n, c in zip(names, classes)])
    ds = ImageFolderDataset(path, use_labels=True)
    assert ds.has_labels and ds.has_onehot_labels
    assert ds.label_shape == [5] and ds.label_dim == 5  # largest class + 1
    for i, c in enumerate(classes):
        expected = np.zeros(5, np.float32)
        expected[c] = 1
        np.testing.assert_array_equal(ds[i][1], expected)
        assert ds.get_label(i).dtype == np.float32
    assert ds.get_details(2).raw_label == 4
    # 'auto' finds them too; False ignores them.
    assert ImageFolderDataset(path, use_labels='auto').label_dim == 5
    off = ImageFolderDataset(path, use_labels=False)
    assert off.label_dim == 0 and off[0][1].shape == (0,)


def test_vector_labels(tmp_path):
    images = random_images(3)
    vectors = [[0.5, -1.0], [2, 3.25], [0.0, 0.1]]
    path = write_dataset(tmp_path / 'vec', {f'{i}.png': im for i, im in enumerate(images)},
                         labels=[[f'{i}.png', v] for i, v in enumerate(vectors)])
    ds = ImageFolderDataset(path, use_labels=True)
    assert ds.has_labels and not ds.has_onehot_labels and ds.label_shape == [2]
    for i, v in enumerate(vectors):
        np.testing.assert_array_equal(ds[i][1], np.array(v, np.float32))


def test_auto_labels_when_absent(tmp_path):
    images = random_images(2)
    plain = write_dataset(tmp_path / 'plain', {'0.png': images[0], '1.png': images[1]})
    null = write_dataset(tmp_path / 'null', {'0.png': images[0], '1.png': images[1]}, dataset_json={'labels': None})
    for path in (plain, null):
        assert not ImageFolderDataset(path, use_labels='auto').has_labels


def test_xflip_and_details(tmp_path):
    images = random_images(3)
    path = write_dataset(tmp_path / 'f.zip', {f'{i}.png': im for i, im in enumerate(images)})
    ds = ImageFolderDataset(path, xflip=True)
    assert len(ds) == 6
    for i in range(3):
        np.testing.assert_array_equal(ds[i][0], chw(images[i]))
        np.testing.assert_array_equal(ds[i + 3][0], chw(images[i])[:, :, ::-1])
        assert ds[i + 3][0].flags.c_contiguous
        assert ds.get_details(i + 3).raw_idx == i and ds.get_details(i + 3).xflip
        assert not ds.get_details(i).xflip


def test_max_size_subset_matches_upstream_draw(tmp_path):
    images = random_images(10)
    path = write_dataset(tmp_path / 'm', {f'{i:02d}.png': im for i, im in enumerate(images)})
    # Upstream's subset for 10 images, max_size=3: seed 0 -> raw indices [2, 4, 8], seed 1 -> [2, 6, 9].
    for seed, expected in ((0, [2, 4, 8]), (1, [2, 6, 9])):
        ds = ImageFolderDataset(path, max_size=3, random_seed=seed)
        assert len(ds) == 3
        assert [ds.get_details(i).raw_idx for i in range(3)] == expected
        for i, raw in enumerate(expected):
            np.testing.assert_array_equal(ds[i][0], chw(images[raw]))
    # xflip applies after max_size: the mirrored half is the same subset.
    ds = ImageFolderDataset(path, max_size=3, xflip=True)
    assert [ds.get_details(i).raw_idx for i in range(6)] == [2, 4, 8, 2, 4, 8]
    assert ImageFolderDataset(path, max_size=50).__len__() == 10


def test_pickle_and_dataloader_workers(tmp_path):
    images = random_images(10)
    names = [f'{i}.png' for i in range(10)]
    path = write_dataset(tmp_path / 'dl.zip', dict(zip(names, images)),
                         labels=[[n, i % 3] for i, n in enumerate(names)])
    ds = ImageFolderDataset(path, use_labels=True, xflip=True)
    direct = [ds[i] for i in range(len(ds))]  # opens the zip in this process before forking
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[7][0], direct[7][0])

    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    got_images = torch.cat([b[0] for b in batches]).numpy()
    got_labels = torch.cat([b[1] for b in batches]).numpy()
    np.testing.assert_array_equal(got_images, np.stack([d[0] for d in direct]))
    np.testing.assert_array_equal(got_labels, np.stack([d[1] for d in direct]))
    assert got_labels.shape == (20, 3)


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs fork')
def test_zip_reads_survive_fork(tmp_path):
    # A zip handle inherited through fork shares its file offset with the parent; parent and child
    # reading at once must each re-open it, or they read each other's bytes.
    images = random_images(64, size=32)
    path = write_dataset(tmp_path / 'fork.zip', {f'{i:03d}.png': im for i, im in enumerate(images)})
    ds = ImageFolderDataset(path)
    ds[0]  # the parent's handle is open before the fork

    def count_bad_reads():
        bad = 0
        for _ in range(10):
            for i, image in enumerate(images):
                try:
                    bad += not np.array_equal(ds[i][0], chw(image))
                except DatasetError:
                    bad += 1
        return bad

    pid = os.fork()
    if pid == 0:  # child: report through the exit status, never return into pytest
        code = 1
        try:
            code = min(count_bad_reads(), 100)
        finally:
            os._exit(code)
    parent_bad = count_bad_reads()
    _, status = os.waitpid(pid, 0)
    assert (parent_bad, os.waitstatus_to_exitcode(status)) == (0, 0)


# ---------------------------------------------------------------------------------------------
# Errors: one sentence naming the file.


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(DatasetError, match='nowhere.zip.*does not exist'):
        ImageFolderDataset(str(tmp_path / 'nowhere.zip'))
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'readme.txt').write_text('hi')
    with pytest.raises(DatasetError, match='empty.*holds no image files'):
        ImageFolderDataset(str(tmp_path / 'empty'))
    (tmp_path / 'data.tar').write_bytes(b'x')
    with pytest.raises(DatasetError, match='data.tar.*neither a directory nor a .zip'):
        ImageFolderDataset(str(tmp_path / 'data.tar'))
    (tmp_path / 'broken.zip').write_bytes(b'this is no zip')
    with pytest.raises(DatasetError, match='broken.zip.*not a readable zip'):
        ImageFolderDataset(str(tmp_path / 'broken.zip'))
    with pytest.raises(DatasetError, match="builtin:nope.*available"):
        ImageFolderDataset('builtin:nope')


@pytest.mark.parametrize('kind', ['folder', 'zip'])
def test_corrupt_images_are_named(tmp_path, kind):
    good = random_images(3)
    truncated = png_bytes(good[1])[:60]
    suffix = '.zip' if kind == 'zip' else ''
    # A corrupt image after the first: the dataset opens, reading that image names it.
    path = write_dataset(tmp_path / f'late{suffix}', {'0.png': good[0], '1.png': truncated, '2.png': good[2]})
    ds = ImageFolderDataset(path)
    np.testing.assert_array_equal(ds[2][0], chw(good[2]))
    with pytest.raises(DatasetError, match=r"1\.png.*not a readable image"):
        ds[1]
    # A corrupt first image fails at open time.
    path = write_dataset(tmp_path / f'first{suffix}', {'0.png': b'garbage bytes', '1.png': good[1]})
    with pytest.raises(DatasetError, match=r"0\.png.*not a readable image"):
        ImageFolderDataset(path)


def test_shape_errors_are_named(tmp_path):
    a, b = random_images(2)
    mixed_size = write_dataset(tmp_path / 'size', {'a.png': a, 'b.png': random_images(1, size=16)[0]})
    ds = ImageFolderDataset(mixed_size)
    with pytest.raises(DatasetError, match=r"b\.png.*16x16 RGB.*a\.png.*8x8 RGB"):
        ds[1]
    mixed_channels = write_dataset(tmp_path / 'chan.zip', {'a.png': a, 'b.png': random_images(1, channels=1)[0]})
    with pytest.raises(DatasetError, match=r"'b\.png' in .*chan\.zip.*8x8 grayscale.*same size and channel count"):
        ImageFolderDataset(mixed_channels)[1]
    wide = write_dataset(tmp_path / 'wide', {'w.png': np.zeros((8, 16, 3), np.uint8)})
    with pytest.raises(DatasetError, match=r"w\.png.*16x8 pixels.*square"):
        ImageFolderDataset(wide)
    odd = write_dataset(tmp_path / 'odd', {'o.png': np.zeros((12, 12, 3), np.uint8)})
    with pytest.raises(DatasetError, match=r"o\.png.*12x12.*power of two"):
        ImageFolderDataset(odd)
    ok = write_dataset(tmp_path / 'ok', {'k.png': a})
    with pytest.raises(DatasetError, match=r"k\.png.*8x8.*resolution=16"):
        ImageFolderDataset(ok, resolution=16)
    deep = write_dataset(tmp_path / 'deep', {'d.png': np.zeros((8, 8), np.uint16)})
    with pytest.raises(DatasetError, match=r"d\.png.*16-bit"):
        ImageFolderDataset(deep)


LABEL_ERRORS = [
    # (dataset.json content or None for absent, expected message pattern)
    (None, r"has no dataset\.json.*use_labels=True"),
    ({'labels': None}, r"dataset\.json.*has no labels"),
    ({'labels': [['0.png', 1]]}, r"dataset\.json.*no label for image '1\.png'"),
    ({'labels': [['0.png', 1], ['1.png', 'cat']]}, r"dataset\.json.*'1\.png'.*\"cat\".*class index"),
    ({'labels': [['0.png', 1], ['1.png', -1]]}, r"dataset\.json.*'1\.png'.*-1"),
    ({'labels': [['0.png', 1], ['1.png', [0.5]]]}, r"dataset\.json.*mixes label kinds.*'0\.png'.*'1\.png'"),
    ({'labels': [['0.png', [1, 2]], ['1.png', [1.0]]]}, r"dataset\.json.*'1\.png'.*length 1.*'0\.png'.*length 2"),
    ({'labels': [['0.png']]}, r"dataset\.json.*each entry must be \[relative_path, label\]"),
    ({'labels': {'0.png': 1}}, r"\"labels\" in .*dataset\.json.*must be a list"),
    ('{"labels": [', r"dataset\.json.*not valid JSON"),
    # Ranges and finiteness (a class index becomes the width of a one-hot vector and of G's embedding).
    ({'labels': [['0.png', 1], ['1.png', 10 ** 30]]}, r"dataset\.json.*class index of '1\.png' is a 31-digit number, "
                                                       r"outside 0\.\.1048575"),
    ({'labels': [['0.png', 1], ['1.png', 10 ** 12]]}, r"dataset\.json.*'1\.png' is 1000000000000, outside"),
    ({'labels': [['0.png', 1], ['1.png', 2 ** 20]]}, r"dataset\.json.*'1\.png' is 1048576, outside 0\.\.1048575"),
    ('{"labels": [["0.png", 1], ["1.png", NaN]]}', r"dataset\.json.*'1\.png' is NaN, not a whole number"),
    ('{"labels": [["0.png", 1], ["1.png", 1e999]]}', r"dataset\.json.*'1\.png' is Infinity, not a whole number"),
    ({'labels': [['0.png', 1], ['1.png', 2.5]]}, r"dataset\.json.*'1\.png' is 2\.5, not a whole number"),
    ({'labels': [['0.png', 1], ['1.png', True]]}, r"dataset\.json.*'1\.png', true, is neither a class index"),
    ('{"labels": [["0.png", [1, 2]], ["1.png", [0.5, NaN]]]}', r"dataset\.json.*'1\.png' holds a non-finite number"),
    ({'labels': [['0.png', [1, 2]], ['1.png', [1, 'x']]]}, r"dataset\.json.*'1\.png' holds something other than numbers"),
    ({'labels': [['0.png', [1e300]], ['1.png', [1.0]]]}, r"dataset\.json.*too large for float32"),
    ({'labels': [['0.png', [0] * (2 ** 20 + 1)], ['1.png', [0]]]}, r"dataset\.json.*'0\.png' has length 1048577"),
    ({'labels': [['0.png', []], ['1.png', []]]}, r"dataset\.json.*'0\.png' has length 0"),
    ({'labels': [['0.png', 1], ['1.png', 2], ['0.png', 3]]}, r"dataset\.json.*gives image '0\.png' more than one"),
    ('[' * 100000, r"dataset\.json.*not valid JSON \(nested too deeply\)"),
    ('{"labels": [["0.png", ' + '9' * 5000 + ']]}', r"dataset\.json.*not valid JSON"),
    ('[["0.png", 1]]', r"dataset\.json.*must hold a JSON object"),
    (b'\xff\xfe{', r"dataset\.json.*not valid JSON"),
]


@pytest.mark.parametrize('meta,pattern', LABEL_ERRORS, ids=range(len(LABEL_ERRORS)))
def test_label_errors_are_named(tmp_path, meta, pattern):
    images = random_images(2)
    files = {'0.png': images[0], '1.png': images[1]}
    if isinstance(meta, bytes):
        files['dataset.json'] = meta
        meta = None
    path = write_dataset(tmp_path / 'lab.zip', files, dataset_json=meta)
    with pytest.raises(DatasetError, match=pattern) as info:
        ImageFolderDataset(path, use_labels=True)  # labels are checked at open time
    assert 'lab.zip' in str(info.value) and '\n' not in str(info.value)
    if meta is not None and meta != {'labels': None}:
        with pytest.raises(DatasetError, match=pattern):
            ImageFolderDataset(path, use_labels='auto')  # what train.py's dry run opens with


def test_labels_in_range_are_kept(tmp_path):
    images = random_images(2)
    path = write_dataset(tmp_path / 'edge.zip', {'0.png': images[0], '1.png': images[1]},
                         labels=[['0.png', 2 ** 20 - 1], ['1.png', 3.0]])     # the largest index; a whole float
    ds = ImageFolderDataset(path, use_labels=True)
    assert ds.label_dim == 2 ** 20 and ds.get_details(1).raw_label == 3 and ds[0][1][2 ** 20 - 1] == 1
    assert ImageFolderDataset(path, use_labels=False).label_dim == 0      # not even read


# ---------------------------------------------------------------------------------------------
# Hostile files: sizes checked before reading, bounded reads, bounded decoding.


def zip_with(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, 'w', compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def set_declared_size(path, member, size):
    """Overwrite the uncompressed size of `member` in the zip's local and central headers."""
    data = bytearray(Path(path).read_bytes())
    name = member.encode()
    for signature, size_at, name_len_at, name_at in ((b'PK\x03\x04', 22, 26, 30), (b'PK\x01\x02', 24, 28, 46)):
        pos = data.find(signature)
        while pos >= 0:
            length = int.from_bytes(data[pos + name_len_at:pos + name_len_at + 2], 'little')
            if data[pos + name_at:pos + name_at + length] == name:
                data[pos + size_at:pos + size_at + 4] = size.to_bytes(4, 'little')
            pos = data.find(signature, pos + 4)
    Path(path).write_bytes(bytes(data))


def set_encrypted_flag(path, member):
    data = bytearray(Path(path).read_bytes())
    pos = data.find(b'PK\x01\x02')
    while pos >= 0:
        length = int.from_bytes(data[pos + 28:pos + 30], 'little')
        if data[pos + 46:pos + 46 + length] == member.encode():
            data[pos + 8] |= 1
        pos = data.find(b'PK\x01\x02', pos + 4)
    Path(path).write_bytes(bytes(data))


def no_reads(monkeypatch, *members):
    """Fail the test if one of `members` is opened for reading in any zip."""
    original = zipfile.ZipFile.open

    def guarded(self, name, *args, **kwargs):
        if getattr(name, 'filename', name) in members:
            raise AssertionError(f'{name} was opened although its header should have refused it')
        return original(self, name, *args, **kwargs)
    monkeypatch.setattr(zipfile.ZipFile, 'open', guarded)


def test_zip_members_are_checked_from_their_headers(tmp_path, monkeypatch):

    good = png_bytes(random_images(1)[0])
    # A 3 GiB member (declared in the header): refused before a byte is decompressed, also as the
    # first image (open time) and as dataset.json.
    huge = zip_with(tmp_path / 'huge.zip', {'a.png': good, 'b.png': good})
    set_declared_size(huge, 'b.png', 3 << 30)
    first = zip_with(tmp_path / 'first.zip', {'a.png': good})
    set_declared_size(first, 'a.png', 3 << 30)
    meta = zip_with(tmp_path / 'meta.zip', {'a.png': good, 'dataset.json': b'{"labels": null}'})
    set_declared_size(meta, 'dataset.json', image_sources.MAX_DATASET_JSON_BYTES + 1)
    ds = ImageFolderDataset(huge)
    with monkeypatch.context() as m:
        no_reads(m, 'a.png', 'b.png', 'dataset.json')
        with pytest.raises(DatasetError, match=r"'b\.png' in .*huge\.zip' declares 3,221,225,472 bytes uncompressed"):
            ds[1]
        with pytest.raises(DatasetError, match=r"'a\.png' in .*first\.zip' declares"):
            ImageFolderDataset(first)
    with monkeypatch.context() as m:
        no_reads(m, 'dataset.json')
        with pytest.raises(DatasetError, match=r"'dataset\.json' in .*meta\.zip' declares 67,108,865 bytes"):
            ImageFolderDataset(meta)

    # More than deflate can compress (about 1032:1): the header lies.
    ratio = zip_with(tmp_path / 'ratio.zip', {'a.png': good, 'b.png': good})
    set_declared_size(ratio, 'b.png', 50_000_000)
    # Stored members have one size; encrypted ones cannot be read.
    stored = zip_with(tmp_path / 'stored.zip', {'a.png': good, 'b.png': good}, zipfile.ZIP_STORED)
    set_declared_size(stored, 'b.png', 20)
    locked = zip_with(tmp_path / 'locked.zip', {'a.png': good, 'b.png': good})
    set_encrypted_flag(locked, 'b.png')
    with monkeypatch.context() as m:
        ratio_ds, stored_ds, locked_ds = ImageFolderDataset(ratio), ImageFolderDataset(stored), \
            ImageFolderDataset(locked)
        no_reads(m, 'b.png')
        with pytest.raises(DatasetError, match=r"'b\.png' in .*ratio\.zip' declares a compression ratio of [0-9,]+:1, more than deflate"):
            ratio_ds[1]
        with pytest.raises(DatasetError, match=r"'b\.png' in .*stored\.zip' is stored uncompressed but its zip header"):
            stored_ds[1]
        with pytest.raises(DatasetError, match=r"'b\.png' in .*locked\.zip' is encrypted"):
            locked_ds[1]

    # A header that declares fewer bytes than the member holds: the CRC check names the member.
    short = zip_with(tmp_path / 'short.zip', {'a.png': good, 'b.png': good})
    set_declared_size(short, 'b.png', 20)
    with pytest.raises(DatasetError, match=r"'b\.png' in .*short\.zip' cannot be extracted \(BadZipFile"):
        ImageFolderDataset(short)[1]


def test_zip_reads_are_bounded_even_past_the_header_check(tmp_path, monkeypatch):
    # With the header check switched off, a member bigger than the cap is still never read whole:
    # the reader stops one byte past the cap.
    good = png_bytes(random_images(1)[0])
    bomb = zip_with(tmp_path / 'bomb.zip', {'a.png': good, 'b.png': bytes(4 << 20)})   # 4 MiB of zeros, ~4 kB
    assert zipfile.ZipFile(bomb).getinfo('b.png').compress_size < 50_000
    ds = ImageFolderDataset(bomb)
    monkeypatch.setattr(image_sources, 'MAX_IMAGE_BYTES', 1 << 20)
    monkeypatch.setattr(image_sources, '_check_zip_header', lambda *args: None)
    asked = []
    original_read = zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipExtFile, 'read', lambda self, n=-1: asked.append(n) or original_read(self, n))
    with pytest.raises(DatasetError, match=r"'b\.png' in .*bomb\.zip' does not hold the 4,194,304 bytes"):
        ds[1]
    assert asked == [(1 << 20) + 1]


def test_folder_files_are_checked_before_reading(tmp_path):

    folder = Path(write_dataset(tmp_path / 'big', {'a.png': random_images(1)[0]}))
    with open(folder / 'b.png', 'wb') as f:          # sparse: no disk space, but stat() says huge
        f.truncate(image_sources.MAX_IMAGE_BYTES + 1)
    ds = ImageFolderDataset(folder)
    with pytest.raises(DatasetError, match=r"big/b\.png' is 272,168,387 bytes, more than the 272,168,386 bytes"):
        ds[1]
    with open(folder / 'dataset.json', 'wb') as f:
        f.truncate(image_sources.MAX_DATASET_JSON_BYTES + 1)
    with pytest.raises(DatasetError, match=r"big/dataset\.json' is 67,108,865 bytes"):
        ImageFolderDataset(folder)
    if hasattr(os, 'mkfifo'):                        # opening a FIFO would block forever
        fifo = Path(write_dataset(tmp_path / 'fifo', {'a.png': random_images(1)[0]}))
        os.mkfifo(fifo / 'b.png')
        with pytest.raises(DatasetError, match=r"fifo/b\.png' is not a regular file"):
            ImageFolderDataset(fifo)[1]
        os.mkfifo(tmp_path / 'pipe.zip')
        with pytest.raises(DatasetError, match=r"pipe\.zip' is neither a directory nor a regular file"):
            ImageFolderDataset(tmp_path / 'pipe.zip')


def png_header_only(width, height):
    """A PNG whose IHDR claims width x height RGB pixels, with almost no pixel data."""
    def chunk(kind, payload):
        return (len(payload).to_bytes(4, 'big') + kind + payload +
                zlib.crc32(kind + payload).to_bytes(4, 'big'))
    ihdr = width.to_bytes(4, 'big') + height.to_bytes(4, 'big') + bytes([8, 2, 0, 0, 0])
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(bytes(100))) + \
        chunk(b'IEND', b'')


def test_decoded_images_are_bounded(tmp_path):
    assert PIL.Image.MAX_IMAGE_PIXELS == 8192 * 8192           # set explicitly by training.dataset
    good = random_images(1)[0]
    bomb = write_dataset(tmp_path / 'bomb.zip', {'a.png': png_header_only(100000, 100000)})
    with pytest.raises(DatasetError, match=r"'a\.png' in .*bomb\.zip' is larger than 8192x8192 pixels"):
        ImageFolderDataset(bomb)
    # Few pixels, but one side too long; and just below Pillow's error threshold (a warning there).
    for size, name in (((2, 9000), 'wide'), ((8200, 8200), 'square')):
        data = png_bytes(np.zeros(size, np.uint8)) if name == 'wide' else png_header_only(*size)
        path = write_dataset(tmp_path / f'{name}.zip', {'a.png': good, 'b.png': data})
        with pytest.raises(DatasetError, match=r"'b\.png' in .*(more than the 8192 pixels per side|larger than 8192x8192)"):
            ImageFolderDataset(path)[1]


def test_only_pixel_decoders_are_used(tmp_path):
    # PostScript content under an image name must not reach Pillow's EPS plugin (which runs
    # Ghostscript); .eps/.ps/.pdf files do not count as images at all.
    eps = b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n'
    path = write_dataset(tmp_path / 'ps', {'a.png': random_images(1)[0], 'b.png': eps, 'c.eps': eps, 'd.pdf': eps})
    ds = ImageFolderDataset(path)
    assert len(ds) == 2
    with pytest.raises(DatasetError, match=r"ps/b\.png' is not a readable image"):
        ds[1]

    assert {'.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif'} <= image_sources.image_extensions()
    assert not {'.eps', '.ps', '.pdf', '.txt'} & image_sources.image_extensions()


def test_channels_are_checked_when_the_dataset_opens(tmp_path):
    rgba = np.dstack([random_images(1)[0], np.full((8, 8), 255, np.uint8)])
    gray_alpha = np.dstack([random_images(1, channels=1)[0], np.full((8, 8), 255, np.uint8)])
    for name, image, kind in (('rgba', rgba, 'RGBA'), ('la', gray_alpha, r'grayscale\+alpha')):
        path = write_dataset(tmp_path / f'{name}.zip', {'a.png': image, 'b.png': random_images(1)[0]})
        with pytest.raises(DatasetError, match=rf"'a\.png' in .*{name}\.zip' is 8x8 {kind}, but dataset images must "
                                               rf"be grayscale or RGB"):
            ImageFolderDataset(path)
    later = write_dataset(tmp_path / 'later.zip', {'a.png': random_images(1)[0], 'b.png': rgba})
    with pytest.raises(DatasetError, match=r"'b\.png' in .*later\.zip' is 8x8 RGBA but 'a\.png' .* is 8x8 RGB"):
        ImageFolderDataset(later)[1]


def test_errors_from_dataloader_workers_stay_one_sentence(tmp_path):
    images = random_images(6)
    files = {f'{i}.png': im for i, im in enumerate(images)}
    files['4.png'] = b'not a png'
    ds = ImageFolderDataset(write_dataset(tmp_path / 'late.zip', files))
    with pytest.raises(DatasetError) as info:
        list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1))
    assert str(info.value).startswith(f"'4.png' in '{tmp_path / 'late.zip'}' is not a readable image")
    assert '\n' not in str(info.value) and 'Traceback' not in str(info.value)


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(path=123), r'Dataset path 123 is not a text path'),
    (dict(max_size=2, random_seed=-1), r"ok\.zip': random_seed=-1 must be an integer 0\.\.4294967295"),
    (dict(max_size=2, random_seed=2 ** 40), r'random_seed=1099511627776 must be'),
    (dict(max_size='3'), r"max_size='3' must be an integer >= 1"),
    (dict(max_size=0), r'max_size=0 must be an integer >= 1'),
    (dict(resolution='8'), r"resolution='8' must be an integer"),
    (dict(use_labels='yes'), r"use_labels='yes' must be True, False or 'auto'"),
])
def test_constructor_options_are_checked(tmp_path, kwargs, pattern):
    # training_set_kwargs can come from a pickle (calc_metrics.py without --data).
    path = write_dataset(tmp_path / 'ok.zip', {f'{i}.png': im for i, im in enumerate(random_images(3))})
    with pytest.raises(DatasetError, match=pattern):
        ImageFolderDataset(**{'path': path, **kwargs})


def test_dataset_class_is_registered():
    from stylefreq.kwargs import registered_class
    assert registered_class('training.dataset.ImageFolderDataset') is ImageFolderDataset


# ---------------------------------------------------------------------------------------------
# The built-in demo dataset.


def test_builtin_blobs_behaves_like_a_file_dataset():
    ds = ImageFolderDataset('builtin:blobs32', use_labels=True)
    assert ds.name == 'blobs32' and len(ds) == 512
    assert ds.image_shape == [3, 32, 32] and ds.resolution == 32 and ds.num_channels == 3
    assert ds.has_onehot_labels and ds.label_dim == 4
    labels = np.stack([ds.get_label(i) for i in range(len(ds))])
    np.testing.assert_array_equal(labels.sum(0), [128] * 4)  # balanced classes
    # Deterministic: a second instance (and a pickled copy) gives the same bytes.
    again = pickle.loads(pickle.dumps(ImageFolderDataset('builtin:blobs32')))
    for i in (0, 77, 511):
        np.testing.assert_array_equal(ds[i][0], again[i][0])
    assert ds.metadata['builtin']['texture_freqs'] == [[8, 0], [0, 8], [8, 8], [16, 16]]
    sub = ImageFolderDataset('builtin:blobs32', max_size=10, xflip=True, random_seed=3)
    assert len(sub) == 20
    np.testing.assert_array_equal(sub[12][0], ds[sub.get_details(12).raw_idx][0][:, :, ::-1])
    with pytest.raises(DatasetError, match='builtin:blobs32.*resolution=64'):
        ImageFolderDataset('builtin:blobs32', resolution=64)
    assert ImageFolderDataset('builtin:blobs16').image_shape == [3, 16, 16]


def test_builtin_blobs_has_low_and_high_frequency_structure():
    ds = ImageFolderDataset('builtin:blobs32', use_labels=True)
    # Mean power spectrum per class (luma, DC removed per image).
    power = np.zeros((4, 32, 32))
    for i in range(len(ds)):
        image, label = ds[i]
        luma = image.astype(np.float64).mean(0)
        power[int(label.argmax())] += np.abs(np.fft.fft2(luma - luma.mean())) ** 2
    for cls, (fx, fy) in enumerate([(8, 0), (0, 8), (8, 8), (16, 16)]):
        p = power[cls]
        peak = p[fy, fx]
        ring = np.median([p[(fy + dy) % 32, (fx + dx) % 32] for dy in (-2, 0, 2) for dx in (-2, 0, 2) if dx or dy])
        assert peak > 20 * ring, (cls, peak, ring)   # a clear texture peak at the class frequency
        low = p[np.ix_([0, 1, 2, 30, 31], [0, 1, 2, 30, 31])].sum()
        assert low > 0.2 * p.sum()                   # and substantial low-frequency (blob) energy


# ---------------------------------------------------------------------------------------------
# dataset_tool.py: convert.


def test_convert_folder_to_zip_and_back(tmp_path):
    images = random_images(3) + [np.dstack([random_images(1, seed=9)[0], np.full((8, 8), 255, np.uint8)])]
    names = ['x/a.png', 'x/b.png', 'c.png', 'rgba.png']
    src = write_dataset(tmp_path / 'src', dict(zip(names, images)), labels=[[n, i] for i, n in enumerate(names)])
    out = tmp_path / 'out.zip'
    result = run_tool('--source', src, '--dest', out)  # upstream's form, no subcommand
    assert result.exit_code == 0, result.output
    assert f"Wrote 4 images (8x8 RGB) to '{out}'" in result.output
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == ['00000/img00000000.png', '00000/img00000001.png',
                                        '00000/img00000002.png', '00000/img00000003.png', 'dataset.json']
        assert all(info.compress_type == zipfile.ZIP_STORED for info in z.infolist())
        meta = json.loads(z.read('dataset.json'))
    # Source order is sorted: c.png, rgba.png, x/a.png, x/b.png; labels travel with their images.
    order = sorted(range(4), key=lambda i: names[i])
    assert meta['labels'] == [[f'00000/img{k:08d}.png', i] for k, i in enumerate(order)]
    ds = ImageFolderDataset(out, use_labels=True)
    for k, i in enumerate(order):
        np.testing.assert_array_equal(ds[k][0], chw(images[i][:, :, :3]))  # opaque alpha dropped
        assert ds[k][1].argmax() == i

    folder = tmp_path / 'outdir'
    result = run_tool('convert', '--source', out, '--dest', folder, '--max-images', 2)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.rglob('*.png')) == ['img00000000.png', 'img00000001.png']
    assert len(ImageFolderDataset(folder, use_labels=True)) == 2


def test_convert_resize_filters(tmp_path):
    image = random_images(1, size=16)[0]
    src = write_dataset(tmp_path / 'src', {'a.png': image})
    out = {}
    for flt in ('box', 'lanczos'):
        dest = tmp_path / f'{flt}.zip'
        result = run_tool('--source', src, '--dest', dest, '--width', 8, '--height', 8, '--resize-filter', flt)
        assert result.exit_code == 0, result.output
        out[flt] = ImageFolderDataset(dest)[0][0].astype(np.int32)
    # A 2x box downscale is the 2x2 block mean (Pillow rounds in fixed point: allow 1).
    block_mean = chw(image).astype(np.float64).reshape(3, 8, 2, 8, 2).mean((2, 4))
    assert np.abs(out['box'] - block_mean).max() <= 1
    assert np.abs(out['lanczos'] - block_mean).max() > 10  # lanczos is a different, sharper filter


def test_convert_center_crops(tmp_path):
    wide = random_images(1, size=12, seed=1)[0][:8]               # 12 wide, 8 high
    src = write_dataset(tmp_path / 'src', {'w.png': wide})
    dest = tmp_path / 'cc.zip'
    assert run_tool('--source', src, '--dest', dest, '--transform', 'center-crop', '--width', 8,
                    '--height', 8).exit_code == 0
    np.testing.assert_array_equal(ImageFolderDataset(dest)[0][0], chw(wide[:, 2:10]))

    banner = random_images(1, size=16, seed=2)[0][:8]            # 16 wide, 8 high: exactly 2:1
    too_wide = np.zeros((8, 32, 3), np.uint8)                     # 4:1, would need a horizontal crop
    too_small = np.zeros((8, 8, 3), np.uint8)                     # narrower than --width
    src = write_dataset(tmp_path / 'src2', {'a.png': banner, 'b.png': too_wide, 'c.png': too_small})
    dest = tmp_path / 'ccw.zip'
    result = run_tool('--source', src, '--dest', dest, '--transform', 'center-crop-wide', '--width', 16,
                      '--height', 8)
    assert result.exit_code == 0, result.output
    assert 'Wrote 1 images' in result.output and 'skipped 2' in result.output
    expected = np.zeros((16, 16, 3), np.uint8)
    expected[4:12] = banner                                       # black bars above and below
    np.testing.assert_array_equal(ImageFolderDataset(dest)[0][0], chw(expected))


def test_convert_builtin_to_zip(tmp_path):
    dest = tmp_path / 'blobs32.zip'
    result = run_tool('--source', 'builtin:blobs32', '--dest', dest)
    assert result.exit_code == 0, result.output
    written = ImageFolderDataset(dest, use_labels=True)
    builtin = ImageFolderDataset('builtin:blobs32', use_labels=True)
    assert written.name == builtin.name == 'blobs32' and len(written) == 512
    assert written.label_shape == builtin.label_shape
    for i in (0, 1, 2, 3, 300, 511):
        np.testing.assert_array_equal(written[i][0], builtin[i][0])
        np.testing.assert_array_equal(written[i][1], builtin[i][1])
    assert written.metadata['builtin'] == builtin.metadata['builtin']


def test_convert_errors(tmp_path):
    a = random_images(1)[0]
    src = write_dataset(tmp_path / 'src', {'a.png': a})

    def fails(*args, match):
        result = run_tool(*args)
        assert result.exit_code != 0
        message = ' '.join(result.output.split())  # click wraps long lines
        assert match in message, message
        return message

    fails('--source', src, '--dest', tmp_path / 'o.zip', '--width', 100, '--height', 100,
          match='--width: 100 is not a power of two')
    fails('--source', tmp_path / 'missing', '--dest', tmp_path / 'o.zip',
          match=f"'{tmp_path / 'missing'}' does not exist")
    fails('--source', src, '--dest', Path(src) / 'inner.zip', match='lies inside --source')
    fails('--source', src, '--dest', src, match='is the --source itself')
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'x').write_text('')
    fails('--source', src, '--dest', tmp_path / 'full', match='is not empty')
    fails('--source', src, '--dest', tmp_path / 'o.zip', '--transform', 'center-crop', '--width', 8,
          match='needs both --width and --height')
    fails('--source', src, '--dest', tmp_path / 'o.zip', '--width', 8, '--height', 16, match='differ')

    mixed = write_dataset(tmp_path / 'mixed', {'a.png': a, 'b.png': random_images(1, size=16)[0]})
    fails('--source', mixed, '--dest', tmp_path / 'm.zip', match="b.png' is 16x16 RGB after scaling and cropping")
    assert not (tmp_path / 'm.zip').exists() and not list(tmp_path.glob('m.zip*'))  # no half-written archive
    gray_rgb = write_dataset(tmp_path / 'gr', {'a.png': a, 'b.png': random_images(1, channels=1)[0]})
    fails('--source', gray_rgb, '--dest', tmp_path / 'g.zip', match="b.png' is 8x8 grayscale")
    see_through = np.dstack([a, np.zeros((8, 8), np.uint8)])
    fails('--source', write_dataset(tmp_path / 'alpha', {'t.png': see_through}), '--dest', tmp_path / 't.zip',
          match="t.png' has transparent pixels")
    fails('--source', write_dataset(tmp_path / 'nsq', {'n.png': np.zeros((8, 16, 3), np.uint8)}),
          '--dest', tmp_path / 'n.zip', match="n.png' is 16x8 pixels after scaling and cropping")
    fails('--source', write_dataset(tmp_path / 'badlab', {'a.png': a, 'b.png': a}, labels=[['a.png', 0]]),
          '--dest', tmp_path / 'l.zip', match="no label for image 'b.png'")
    fails('--source', write_dataset(tmp_path / 'bad', {'a.png': a, 'b.png': b'junk'}), '--dest',
          tmp_path / 'b.zip', match="b.png' is not a readable image")


def test_convert_refuses_hostile_sources_in_one_sentence(tmp_path):
    good = png_bytes(random_images(1)[0])
    huge = zip_with(tmp_path / 'huge.zip', {'a.png': good, 'b.png': good})
    set_declared_size(huge, 'b.png', 3 << 30)
    labels = write_dataset(tmp_path / 'lab', {'a.png': random_images(1)[0]}, labels=[['a.png', 10 ** 30]])
    for args, message in [
        (['--source', huge, '--dest', tmp_path / 'h.zip'], "'b.png' in '%s' declares 3,221,225,472 bytes" % huge),
        (['--source', labels, '--dest', tmp_path / 'l.zip'], "class index of 'a.png' is a 31-digit number"),
        (['--source', huge, '--dest', tmp_path / 'w.zip', '--width', 16384, '--height', 16384],
         "'--width': 16384 is not in the range 1<=x<=8192"),
    ]:
        result = run_tool(*args)
        output = ' '.join(result.output.split())
        assert result.exit_code != 0 and message in output and 'Traceback' not in output, output
    assert not list(tmp_path.glob('[hlw].zip*'))
    result = run_tool('cosine', '--dest', tmp_path / 'c.zip', '--count', 10 ** 9)
    assert result.exit_code == 2 and '10000000' in result.output


# ---------------------------------------------------------------------------------------------
# Planar cosines.


def test_cosine_uint8_mapping_and_prefix_stability():
    spec = synthetic.CosineSpec(resolution=4, freqs=((0, 0),))
    images = synthetic.to_uint8(synthetic.render_cosines(spec, np.array([[0.5], [0.5], [1.0]]),
                                                         np.array([[0.0], [math.pi], [math.pi]])))
    assert images[0].tolist() == [[191] * 4] * 4      # round((0.5 + 1) * 127.5) = round(191.25)
    assert images[1].tolist() == [[64] * 4] * 4       # round(0.5 * 127.5) = round(63.75)
    assert images[2].tolist() == [[0] * 4] * 4
    assert synthetic.to_uint8(np.array([-1.0, 1.0])).tolist() == [0, 255]
    np.testing.assert_allclose(synthetic.from_uint8(np.array([0, 255])), [-1, 1])

    spec = synthetic.CosineSpec(resolution=16, freqs=((3, 3), (0, 8)))
    small = synthetic.sample_cosine_params(spec, 10, seed=5)
    large = synthetic.sample_cosine_params(spec, 50, seed=5)
    for s, l in zip(small, large):
        np.testing.assert_array_equal(s, l[:10])


def test_cosine_dataset_spectrum_and_statistics(tmp_path):
    dest = tmp_path / 'cos.zip'
    result = run_tool('cosine', '--dest', dest, '--freqs', '3,5', '--resolution', 32, '--count', 400, '--seed', 1)
    assert result.exit_code == 0, result.output
    ds = ImageFolderDataset(dest)
    assert len(ds) == 400 and ds.image_shape == [1, 32, 32] and ds.name == 'cos'
    record = ds.metadata['cosine']
    assert record['freqs'] == [[3, 5]] and record['count'] == 400 and record['seed'] == 1
    assert record['magnitude']['mean'] == 0.5 and record['magnitude']['std'] == 0.1
    assert record['phase']['std'] == pytest.approx(0.2 * math.pi)
    spec = synthetic.CosineSpec.from_json(record)
    images = np.stack([ds[i][0][0] for i in range(len(ds))])

    # All energy sits at +-(fx, fy) = +-(3, 5): row index fy, column index fx.
    power = np.abs(np.fft.fft2(synthetic.from_uint8(images))) ** 2
    at_carrier = power[:, 5, 3] + power[:, -5, -3]
    assert np.all(at_carrier / power.sum((1, 2)) > 0.999)

    mags, phases = synthetic.estimate_cosine_params(images, spec)
    assert abs(mags.mean() - 0.5) < 0.02 and abs(mags.std() - 0.1) < 0.015
    assert abs(phases.mean()) < 0.1 and abs(phases.std() / (0.2 * math.pi) - 1) < 0.12
    # The written images are exactly the generator's draws (up to uint8 rounding).
    true_mags, true_phases = synthetic.sample_cosine_params(spec, 400, seed=1)
    np.testing.assert_allclose(mags, true_mags, atol=0.01)
    np.testing.assert_allclose(phases, true_phases, atol=0.05)


def test_cosine_real_carriers_and_mixtures():
    # DC and the (8, 8) Nyquist corner are real carriers: phase 0 or pi, half and half.
    spec = synthetic.CosineSpec(resolution=16, freqs=((0, 0), (8, 8), (3, -2)))
    np.testing.assert_array_equal(spec.real_carriers, [True, True, False])
    mags, phases = synthetic.sample_cosine_params(spec, 400, seed=0)
    images = synthetic.to_uint8(synthetic.render_cosines(spec, mags, phases))
    est_mags, est_phases = synthetic.estimate_cosine_params(images, spec)
    np.testing.assert_allclose(est_mags, mags, atol=0.02)   # the 1/K of the mixture is undone
    for k in (0, 1):
        on_axis = np.minimum(np.abs(est_phases[:, k]), np.abs(np.abs(est_phases[:, k]) - math.pi))
        assert on_axis.max() < 1e-6                     # exactly 0 or pi
        share_pi = np.mean(np.abs(est_phases[:, k]) > 1)
        assert 0.4 < share_pi < 0.6
    assert abs(est_phases[:, 2].std() / (0.2 * math.pi) - 1) < 0.12
    # Nothing outside the three carriers (and the conjugate of (3, -2)).
    power = (np.abs(np.fft.fft2(synthetic.from_uint8(images))) ** 2).sum(0)
    mask = np.zeros((16, 16), bool)
    mask[0, 0] = mask[8, 8] = mask[-2, 3] = mask[2, -3] = True
    assert power[~mask].sum() < 1e-3 * power.sum()


def test_cosine_cli_errors(tmp_path):
    for args, match in [
        (['--freqs', '20,0', '--resolution', 32], 'outside [-16, 16]'),
        (['--freqs', '3,3;-3,-3'], 'same carrier'),
        (['--freqs', '3'], "'3' is not a frequency pair"),
        (['--freqs', '3,3', '--resolution', 100], 'resolution=100 is not a power of two'),
    ]:
        result = run_tool('cosine', '--dest', tmp_path / 'c.zip', '--count', 2, *args)
        assert result.exit_code != 0 and match in result.output, result.output
    # Repeated and ';'-separated --freqs combine.
    result = run_tool('cosine', '--dest', tmp_path / 'ok.zip', '--count', 2, '--resolution', 8,
                      '--freqs', '0,0;1,2', '--freqs', '4,4')
    assert result.exit_code == 0, result.output
    assert ImageFolderDataset(tmp_path / 'ok.zip').metadata['cosine']['freqs'] == [[0, 0], [1, 2], [4, 4]]


# ---------------------------------------------------------------------------------------------
# Frequency shift.


def test_shift_moves_the_spectrum_by_half():
    image = chw(random_images(1, size=16, seed=4)[0])
    shifted = synthetic.shift_spectrum_half(image)
    expected = np.roll(np.fft.fft2(synthetic.from_uint8(image)), (8, 8), axis=(-2, -1))
    np.testing.assert_allclose(np.fft.fft2(synthetic.from_uint8(shifted)), expected, atol=1e-9)
    assert shifted[:, 0, 0].tolist() == image[:, 0, 0].tolist()
    assert shifted[:, 0, 1].tolist() == (255 - image[:, 0, 1]).tolist()
    np.testing.assert_array_equal(synthetic.shift_spectrum_half(shifted), image)  # exact, self-inverse


def test_shift_cli_keeps_labels_and_round_trips(tmp_path):
    once, twice = tmp_path / 'once.zip', tmp_path / 'twice.zip'
    assert run_tool('shift', '--source', 'builtin:blobs16', '--dest', once).exit_code == 0
    original = ImageFolderDataset('builtin:blobs16', use_labels=True)
    shifted = ImageFolderDataset(once, use_labels=True)
    assert shifted.metadata['freq_shift'] == [0.5, 0.5]
    for i in (0, 5, 300):
        np.testing.assert_array_equal(shifted[i][0], synthetic.shift_spectrum_half(original[i][0]))
        np.testing.assert_array_equal(shifted[i][1], original[i][1])
    assert run_tool('shift', '--source', once, '--dest', twice).exit_code == 0
    back = ImageFolderDataset(twice, use_labels=True)
    assert 'freq_shift' not in back.metadata
    np.testing.assert_array_equal(back[7][0], original[7][0])


def test_shift_of_cosine_dataset_moves_its_carriers(tmp_path):
    cos, scos = tmp_path / 'cos.zip', tmp_path / 'scos.zip'
    assert run_tool('cosine', '--dest', cos, '--freqs', '3,3;0,0', '--resolution', 16, '--count', 50).exit_code == 0
    assert run_tool('shift', '--source', cos, '--dest', scos).exit_code == 0
    record = ImageFolderDataset(scos).metadata['cosine']
    assert record['freqs'] == [[-5, -5], [8, 8]] and record['real_carriers'] == [[8, 8]]
    spec_before = synthetic.CosineSpec.from_json(ImageFolderDataset(cos).metadata['cosine'])
    spec_after = synthetic.CosineSpec.from_json(record)
    before = np.stack([ImageFolderDataset(cos)[i][0] for i in range(50)])
    after = np.stack([ImageFolderDataset(scos)[i][0] for i in range(50)])
    for b, a in zip(synthetic.estimate_cosine_params(before, spec_before),
                    synthetic.estimate_cosine_params(after, spec_after)):
        np.testing.assert_allclose(a, b, atol=1e-9)  # same magnitudes and phases, moved carriers
