"""Prepare datasets in StyleGAN2-ADA's format, and the frequency-bias study's synthetic datasets.

Output format (upstream's): a .zip (stored, uncompressed) or a folder of uncompressed PNGs at
00000/img00000000.png, 00000/img00000001.png, ... plus dataset.json with
{"labels": [["00000/img00000000.png", label], ...] or null, ...other records}.

    python dataset_tool.py --source=~/images --dest=~/datasets/mydata.zip --width=256 --height=256
    python dataset_tool.py --source=builtin:blobs32 --dest=blobs32.zip
    python dataset_tool.py cosine --dest=cos3.zip --freqs=3,3 --resolution=128 --count=50000
    python dataset_tool.py shift --source=~/datasets/celeba128.zip --dest=~/datasets/sceleba128.zip

The first form has no subcommand, as upstream's; it is the same as `dataset_tool.py convert ...`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Callable

import click
import numpy as np
import PIL.Image

from training import synthetic
from training.dataset import label_table, parse_labels
from training.dataset_writer import DatasetWriter, write_cosine_dataset
from training.image_sources import (BUILTIN_PREFIX, MAX_RESOLUTION, DatasetError, ImageSource, describe_shape,
                                    open_image_source)

# The most images `cosine` draws: its parameters are sampled up front (16 bytes per image and carrier).
MAX_COSINE_COUNT = 10_000_000

# ---------------------------------------------------------------------------------------------
# Output.


class Progress:
    """One status line on stderr: rewritten in place on a terminal, every 10 s in a log file."""

    def __init__(self, total: int):
        self.total = total
        self.start = self.last = time.monotonic()
        self.tty = click.get_text_stream('stderr').isatty()

    def update(self, done: int, final: bool = False):
        now = time.monotonic()
        if not final and now - self.last < (0.25 if self.tty else 10.0):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        line = f'{done}/{self.total} images ({100 * done / max(self.total, 1):.0f}%, {rate:.0f} img/s)'
        if self.tty:
            click.echo('\r' + line + ('\n' if final else ''), err=True, nl=False)
        else:
            click.echo(line, err=True)


# ---------------------------------------------------------------------------------------------
# Geometry (upstream's --transform and --width/--height).

_RESAMPLING = getattr(PIL.Image, 'Resampling', PIL.Image)  # the enum is Pillow >= 9.1
_RESAMPLE = {'box': _RESAMPLING.BOX, 'lanczos': _RESAMPLING.LANCZOS}


def resize(image: np.ndarray, width: int, height: int, resize_filter: str) -> np.ndarray:
    h, w, c = image.shape
    if (w, h) == (width, height):
        return image
    pil = PIL.Image.fromarray(image[:, :, 0] if c == 1 else image)
    return np.asarray(pil.resize((width, height), _RESAMPLE[resize_filter])).reshape(height, width, c)


def make_transform(transform: str | None, width: int | None, height: int | None,
                   resize_filter: str) -> Callable[[np.ndarray], np.ndarray | None]:
    """Image [H, W, C] -> transformed image, or None when the image must be skipped."""

    def scale(image):
        h, w = image.shape[:2]
        return resize(image, width or w, height or h, resize_filter)

    def center_crop(image):
        # The largest centred square, then resized to width x height.
        h, w = image.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return resize(image[top:top + s, left:left + s], width, height, resize_filter)

    def center_crop_wide(image):
        # Crop rows to the output's aspect ratio width:height, resize, and pad with black bars to a
        # width x width square. Images narrower than --width (they would be upscaled) or wider than
        # that aspect ratio (they would need a horizontal crop) are skipped, as upstream does.
        h, w, c = image.shape
        crop_h = round(w * height / width)
        if w < width or crop_h > h:
            return None
        top = (h - crop_h) // 2
        band = resize(image[top:top + crop_h], width, height, resize_filter)
        canvas = np.zeros([width, width, c], dtype=np.uint8)
        canvas[(width - height) // 2:(width - height) // 2 + height] = band
        return canvas

    return {None: scale, 'center-crop': center_crop, 'center-crop-wide': center_crop_wide}[transform]


def check_size_flags(transform: str | None, width: int | None, height: int | None):
    for flag, value in (('--width', width), ('--height', height)):
        free = flag == '--height' and transform == 'center-crop-wide'  # the padded square is width x width
        if value is not None and not free and (not synthetic.is_power_of_two(value) or value < 4):
            raise click.BadParameter(f'{value} is not a power of two >= 4, which dataset images must be.',
                                     param_hint=flag)
    if transform is not None and (width is None or height is None):
        raise click.UsageError(f'--transform={transform} needs both --width and --height.')
    if transform == 'center-crop-wide' and height > width:
        raise click.BadParameter(f'{height} exceeds --width={width}, but center-crop-wide pads wide images '
                                 f'to a width x width square.', param_hint='--height')
    if transform != 'center-crop-wide' and width is not None and height is not None and width != height:
        raise click.UsageError(f'--width={width} and --height={height} differ, but dataset images must be '
                               f'square (--transform=center-crop-wide pads wide images instead).')


# ---------------------------------------------------------------------------------------------
# The conversion loop shared by `convert` and `shift`.


def open_source(path: str) -> ImageSource:
    try:
        return open_image_source(os.path.expanduser(path))
    except DatasetError as exc:
        raise click.BadParameter(str(exc), param_hint='--source') from None


def check_dest(dest: str, source: str | None = None) -> str:
    dest = os.path.expanduser(dest)
    if not dest:
        raise click.BadParameter('must name an output folder or .zip file.', param_hint='--dest')
    if dest.startswith(BUILTIN_PREFIX):
        raise click.BadParameter(f"'{dest}': built-in datasets cannot be written to.", param_hint='--dest')
    if source is not None and not source.startswith(BUILTIN_PREFIX):
        src, out = os.path.realpath(os.path.expanduser(source)), os.path.realpath(dest)
        if out == src:
            raise click.BadParameter(f"'{dest}' is the --source itself.", param_hint='--dest')
        if os.path.isdir(src) and os.path.commonpath([src, out]) == src:
            raise click.BadParameter(f"'{dest}' lies inside --source '{source}', so the output would be read "
                                     f"back as input.", param_hint='--dest')
    if dest.lower().endswith('.zip'):
        if os.path.isdir(dest):
            raise click.BadParameter(f"'{dest}' is a directory, not a .zip file.", param_hint='--dest')
    elif os.path.exists(dest) and not os.path.isdir(dest):
        raise click.BadParameter(f"'{dest}' is an existing file; name a folder or a .zip file.", param_hint='--dest')
    elif os.path.isdir(dest) and os.listdir(dest):
        raise click.BadParameter(f"folder '{dest}' is not empty.", param_hint='--dest')
    return dest


def drop_opaque_alpha(image: np.ndarray, where: str) -> np.ndarray:
    """Datasets are grayscale or RGB; an alpha channel is dropped only when it changes nothing."""
    if image.shape[2] in (2, 4):
        if np.any(image[:, :, -1] != 255):
            raise DatasetError(f'{where} has transparent pixels, but dataset images must be RGB or grayscale; '
                               f'flatten it onto a background first.')
        image = image[:, :, :-1]
    return image


def write_dataset(source: ImageSource, dest: str, *, max_images: int | None,
                  transform: Callable[[np.ndarray], np.ndarray | None],
                  pixel_op: Callable[[np.ndarray], np.ndarray] | None = None,
                  extra_metadata: dict | None = None) -> tuple[int, int, tuple]:
    """Read, transform, check and write every image; returns (written, skipped, CHW shape)."""
    names = source.image_names[:max_images]
    meta = source.read_dataset_json() or {}
    json_where = source.describe('dataset.json')
    table = label_table(meta.get('labels'), json_where)
    if table is not None:
        parse_labels(table, names, json_where)  # every error before the first image is written

    writer = DatasetWriter(dest)
    progress = Progress(len(names))
    first_shape = first_where = None
    skipped = 0
    try:
        for idx, name in enumerate(names):
            where = source.describe(name)
            image = transform(drop_opaque_alpha(source.read_image(idx), where))
            if image is None:
                skipped += 1
                continue
            h, w, c = image.shape
            if first_shape is None:
                if h != w:
                    raise DatasetError(f'{where} is {w}x{h} pixels after scaling and cropping, but dataset images '
                                       f'must be square; use equal --width and --height or --transform=center-crop.')
                if not synthetic.is_power_of_two(h) or h < 4:
                    raise DatasetError(f'{where} is {w}x{h} pixels after scaling and cropping, but the resolution '
                                       f'must be a power of two >= 4; set --width and --height to one.')
                first_shape, first_where = (c, h, w), where
            elif (c, h, w) != first_shape:
                raise DatasetError(f'{where} is {describe_shape((c, h, w))} after scaling and cropping but '
                                   f'{first_where} is {describe_shape(first_shape)}; all images must match '
                                   f'(--width and --height resize them all to one size).')
            if pixel_op is not None:
                image = pixel_op(image)
            writer.add(image, None if table is None else table[name])
            progress.update(idx + 1)
        if writer.count == 0:
            raise DatasetError(f"No image of '{source.path}' survived --transform; nothing was written.")
        writer.finish(extra_metadata)
    except BaseException:
        writer.abort()
        raise
    finally:
        source.close()
    progress.update(len(names), final=True)
    return writer.count, skipped, first_shape


def report(dest: str, written: int, skipped: int, shape):
    note = f', skipped {skipped} that --transform could not fit' if skipped else ''
    click.echo(f"Wrote {written} images ({describe_shape(shape)}) to '{dest}'{note}.")


# ---------------------------------------------------------------------------------------------
# Command line.


class ConvertByDefault(click.Group):
    """Upstream's command line has no subcommand: route `--source=... --dest=...` to `convert`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ['convert', *args]
        return super().parse_args(ctx, args)


@click.group(cls=ConvertByDefault)
def main():
    """Create datasets for stylefreq and StyleGAN2-ADA (zip or folder of PNGs + dataset.json).

    \b
    python dataset_tool.py --source=PATH --dest=OUT.zip [...]       same as `convert`, upstream's form
    python dataset_tool.py convert --help                           all conversion flags
    python dataset_tool.py cosine --dest=cos.zip --freqs=3,3        planar-cosine dataset
    python dataset_tool.py shift --source=PATH --dest=OUT.zip       frequency-shifted copy
    """


def fail_on_dataset_errors(fn):
    """Data problems end the command with their one-sentence message, not a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DatasetError as exc:
            raise click.ClickException(str(exc)) from None
    return wrapper


@main.command()
@click.option('--source', required=True, metavar='PATH', help='Folder or zip of images, or builtin:NAME')
@click.option('--dest', required=True, metavar='PATH', help='Output folder or .zip archive')
@click.option('--max-images', type=click.IntRange(min=1), help='Output only the first N images')
@click.option('--resize-filter', type=click.Choice(['box', 'lanczos']), default='lanczos', show_default=True,
              help='Filter used when resizing')
@click.option('--transform', type=click.Choice(['center-crop', 'center-crop-wide']), help='Crop before resizing')
@click.option('--width', type=click.IntRange(1, MAX_RESOLUTION), help='Output width')
@click.option('--height', type=click.IntRange(1, MAX_RESOLUTION), help='Output height')
@fail_on_dataset_errors
def convert(source, dest, max_images, resize_filter, transform, width, height):
    """Convert a folder or zip of images (with optional dataset.json labels) to a dataset.

    \b
    --source path/               every image under path/, in sorted order
    --source data.zip            every image in the archive
    --source builtin:blobs32     the built-in demo data (512 RGB 32x32 images, 4 classes)
    --dest out.zip | out/        an uncompressed zip, or an empty or new folder

    Images are kept at their size unless --width/--height are given. --transform=center-crop
    takes the largest centred square; center-crop-wide crops to width:height and pads to a
    width x width square. Output images must be square, power-of-two sized, and all grayscale or
    all RGB (an alpha channel is dropped if fully opaque). Labels are carried over; other
    dataset.json records only when the images are not resized or cropped.
    """
    check_size_flags(transform, width, height)
    src = open_source(source)
    dest = check_dest(dest, source)
    extra = {k: v for k, v in (src.read_dataset_json() or {}).items() if k != 'labels'}
    if extra and (transform or width or height):
        click.echo(f'Not carrying over dataset.json records {sorted(extra)}: the images are resized or cropped.',
                   err=True)
        extra = {}
    written, skipped, shape = write_dataset(src, dest, max_images=max_images,
                                            transform=make_transform(transform, width, height, resize_filter),
                                            extra_metadata=extra)
    report(dest, written, skipped, shape)


def shift_cosine_record(record: dict) -> dict:
    """A cosine dataset multiplied by (-1)^(x+y) is the cosine dataset with every carrier moved by
    (R/2, R/2): m cos(theta + phi) (-1)^(x+y) = m cos(theta + pi (x + y) + phi), same m and phi."""
    spec = synthetic.CosineSpec.from_json(record)
    half, res = spec.resolution // 2, spec.resolution

    def wrap(f):  # into (-R/2, R/2]
        g = (f + half) % res
        return g - res if g > half else g

    moved = dataclasses.replace(spec, freqs=tuple((wrap(fx), wrap(fy)) for fx, fy in spec.freqs))
    return {**record, **moved.to_json()}


@main.command()
@click.option('--source', required=True, metavar='PATH', help='Dataset: folder, zip or builtin:NAME')
@click.option('--dest', required=True, metavar='PATH', help='Output folder or .zip archive')
@click.option('--max-images', type=click.IntRange(min=1), help='Output only the first N images')
@fail_on_dataset_errors
def shift(source, dest, max_images):
    """Write a frequency-shifted copy of a dataset (the paper's SCelebA / SBedrooms).

    Every image, read as [-1, 1], is multiplied by cos(pi (x + y)) = (-1)^(x + y): its spectrum
    moves by half the sampling rate in both axes, so low frequencies become high ones. In uint8
    this is exact: a pixel u at odd x + y becomes 255 - u (the uint8 grid is symmetric around
    127.5), so there is no rounding and shifting twice gives the original back. Labels are kept;
    dataset.json gets "freq_shift": [0.5, 0.5] (cycles/pixel, x then y), removed again by a second
    shift, and a "cosine" record has its carriers moved accordingly.
    """
    src = open_source(source)
    dest = check_dest(dest, source)
    extra = {k: v for k, v in (src.read_dataset_json() or {}).items() if k != 'labels'}
    if 'cosine' in extra:
        extra['cosine'] = shift_cosine_record(extra['cosine'])
    if extra.pop('freq_shift', None) is None:
        extra['freq_shift'] = [0.5, 0.5]
    written, skipped, shape = write_dataset(
        src, dest, max_images=max_images, transform=make_transform(None, None, None, 'box'),
        pixel_op=lambda image: synthetic.shift_spectrum_half(image.transpose(2, 0, 1)).transpose(1, 2, 0),
        extra_metadata=extra)
    report(dest, written, skipped, shape)


@main.command()
@click.option('--dest', required=True, metavar='PATH', help='Output folder or .zip archive')
@click.option('--freqs', required=True, multiple=True, metavar='FX,FY[;FX,FY...]',
              help='Carrier frequencies in cycles per image (x, y), e.g. 3,3 or "0,0;3,3;41,41"; repeatable')
@click.option('--resolution', type=click.IntRange(1, MAX_RESOLUTION), default=128, show_default=True,
              help='Image size R (power of two)')
@click.option('--count', type=click.IntRange(1, MAX_COSINE_COUNT), default=50000, show_default=True,
              help='Number of images')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Random seed')
@click.option('--mag-mean', type=float, default=0.5, show_default=True, help='Mean of the magnitude m')
@click.option('--mag-std', type=click.FloatRange(min=0), default=0.1, show_default=True, help='Std of m')
@click.option('--phase-std', type=click.FloatRange(min=0), default=0.2, show_default=True,
              help='Std of the phase, in units of pi')
@fail_on_dataset_errors
def cosine(dest, freqs, resolution, count, seed, mag_mean, mag_std, phase_std):
    """Write a planar-cosine dataset (Khayatkhoei & Elgammal), one channel.

    \b
    I[y,x] = 1/K sum_k m_k cos(2 pi (fx_k x + fy_k y) / R + phi_k)      x = column, y = row
    m_k   ~ clip(N(mag_mean, mag_std^2), 0, 1)
    phi_k ~ clip(N(0, (phase_std pi)^2), -pi, pi); uniform{0, pi} for carriers that are DC or
            Nyquist in both axes (their coefficient is real)
    pixel = round((I + 1) * 127.5), i.e. [-1, 1] <-> [0, 255] as the training loop reads it.

    The parameters go to dataset.json under "cosine" (see training.synthetic.CosineSpec) for the
    per-carrier metrics. The paper's three-carrier mix at 128x128:

    \b
    python dataset_tool.py cosine --dest=cos128_mix.zip --freqs="0,0;3,3;41,41"
    """
    try:
        pairs = tuple(p for text in freqs for p in synthetic.parse_freqs(text))
        spec = synthetic.CosineSpec(resolution=resolution, freqs=pairs, mag_mean=mag_mean, mag_std=mag_std,
                                    phase_std=phase_std * math.pi)
    except ValueError as exc:
        hint = '--resolution' if str(exc).startswith('resolution') else '--freqs'
        raise click.BadParameter(f'{exc}.', param_hint=hint) from None
    dest = check_dest(dest)
    progress = Progress(count)
    write_cosine_dataset(dest, spec, count, seed, progress=progress.update)
    progress.update(count, final=True)
    report(dest, count, 0, (1, resolution, resolution))


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
