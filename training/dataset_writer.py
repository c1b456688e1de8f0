"""Writing datasets in StyleGAN2-ADA's layout (images `00000/img00000000.png`, ... and dataset.json),
as dataset_tool.py and the studies do.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile

import numpy as np
import PIL.Image

from stylefreq import files
from training import synthetic
from training.image_sources import archive_name


def encode_png(image: np.ndarray) -> bytes:
    """[H, W, 1|3] uint8 -> uncompressed PNG (upstream's choice: decoding is the training-time cost)."""
    buf = io.BytesIO()
    PIL.Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format='png', compress_level=0)
    return buf.getvalue()


class DatasetWriter:
    """Writes images in upstream's layout plus dataset.json into a zip or a folder.

    A zip is written atomically (stylefreq.files): an interrupted run never leaves a truncated
    archive that looks like a finished dataset.
    """

    def __init__(self, dest: str):
        self.dest = dest
        self.is_zip = dest.lower().endswith('.zip')
        self.count = 0
        self._labels = []
        self._file = contextlib.ExitStack()
        if self.is_zip:
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            target = self._file.enter_context(files.atomic_write(dest, 'wb'))
            self._zip = zipfile.ZipFile(target, mode='w', compression=zipfile.ZIP_STORED)
        else:
            os.makedirs(dest, exist_ok=True)

    def _write(self, member: str, data: bytes):
        if self.is_zip:
            self._zip.writestr(member, data)
        else:
            path = os.path.join(self.dest, *member.split('/'))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'wb') as f:
                f.write(data)

    def add(self, image: np.ndarray, label=None):
        """Append an [H, W, C] uint8 image with its JSON label (None = unlabelled)."""
        name = archive_name(self.count)
        self._write(name, encode_png(image))
        self._labels.append([name, label])
        self.count += 1

    def finish(self, extra_metadata: dict | None = None):
        have = [label is not None for _name, label in self._labels]
        if any(have) and not all(have):
            raise ValueError('either every image or none has a label')  # callers guarantee this
        meta = {'labels': self._labels if all(have) and have else None, **(extra_metadata or {})}
        self._write('dataset.json', json.dumps(meta).encode())
        if self.is_zip:
            self._zip.close()
        self._file.close()                  # renames the finished zip into place

    def abort(self):
        if self.is_zip:
            self._zip.close()
        self._file.__exit__(RuntimeError, RuntimeError('aborted'), None)   # removes the partial zip


def write_cosine_dataset(dest: str, spec: synthetic.CosineSpec, count: int, seed: int = 0, progress=None) -> None:
    """`count` planar-cosine images of `spec` (one channel) with the parameters in dataset.json under
    "cosine"; `progress(done)` is called as images are written."""
    mags, phases = synthetic.sample_cosine_params(spec, count, seed)
    writer = DatasetWriter(dest)
    try:
        for start in range(0, count, 256):
            images = synthetic.to_uint8(synthetic.render_cosines(spec, mags[start:start + 256],
                                                                 phases[start:start + 256]))
            for image in images:
                writer.add(image[:, :, np.newaxis])
            if progress is not None:
                progress(writer.count)
        writer.finish({'cosine': {**spec.to_json(), 'count': count, 'seed': seed}})
    except BaseException:
        writer.abort()
        raise
    if progress is not None:
        progress(count, final=True)
