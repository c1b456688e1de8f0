"""Procedural image data: the built-in demo dataset and the frequency-bias study's synthetic sets.

Everything here is deterministic numpy, independent of files, so tests, the README demo and the
dataset tool (`dataset_tool.py cosine|shift`, `--source=builtin:...`) share one definition.

Value conventions are the training loop's: a uint8 pixel u stands for u / 127.5 - 1 in [-1, 1], and
a value v in [-1, 1] is stored as round((v + 1) * 127.5). Coordinates: x is the column, y the row,
both integer pixel indices from the top-left corner; frequencies are integers in cycles per image
(units of 1/R cycles per pixel), so they sit exactly on the DFT grid.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Callable

import numpy as np

# ---------------------------------------------------------------------------------------------
# Value mapping.


def to_uint8(values: np.ndarray) -> np.ndarray:
    """[-1, 1] -> uint8 via round((v + 1) * 127.5), the inverse of the loop's u / 127.5 - 1."""
    return np.rint((np.asarray(values, dtype=np.float64) + 1) * 127.5).clip(0, 255).astype(np.uint8)


def from_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 -> float64 in [-1, 1], exactly as the training loop reads reals."""
    return np.asarray(images, dtype=np.float64) / 127.5 - 1


def is_power_of_two(n: int) -> bool:
    return isinstance(n, (int, np.integer)) and n > 0 and (n & (n - 1)) == 0


# ---------------------------------------------------------------------------------------------
# Frequency shift by (1/2, 1/2) cycles per pixel (Khayatkhoei & Elgammal's SCelebA, SBedrooms).


def shift_spectrum_half(images: np.ndarray) -> np.ndarray:
    """Multiply uint8 images, read as [-1, 1], by cos(pi (x + y)) = (-1)^(x + y).

    The spatial axes are the last two (HW, CHW or NCHW); every channel gets the same carrier. The
    spectrum moves by (R/2, R/2) bins, i.e. low frequencies become high ones and vice versa.
    There is no rounding at all: negating v = u / 127.5 - 1 maps u to 255 - u, another integer,
    because the uint8 grid is symmetric around 127.5. So the result is exact and the shift is its
    own inverse.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 2:
        raise ValueError(f'expected uint8 images with spatial axes last, got {images.dtype} {list(images.shape)}')
    h, w = images.shape[-2:]
    odd = (np.add.outer(np.arange(h), np.arange(w)) % 2).astype(bool)
    return np.where(odd, 255 - images, images).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Planar cosines (Khayatkhoei & Elgammal, AAAI 2022: the introduction's example).


@dataclasses.dataclass(frozen=True)
class CosineSpec:
    """Images I[y,x] = 1/K sum_k m_k cos(2 pi (fx_k x + fy_k y) / R + phi_k), one channel.

    m_k ~ clip(N(mag_mean, mag_std^2), 0, 1) and phi_k ~ clip(N(0, phase_std^2), -pi, pi), drawn
    independently per image and carrier. A carrier that is DC or Nyquist in both axes is its own
    conjugate, so its coefficient is real and its phase can only be 0 or pi: those get
    phi ~ uniform{0, pi} instead.

    With numpy's fft2 on an [R, R] image in [-1, 1], carrier k appears at F[fy % R, fx % R] =
    R^2 m_k / (2K) e^{i phi_k} (R^2 m_k / K e^{i phi_k} for the real carriers), which is what
    `estimate_cosine_params` inverts.
    """

    resolution: int
    freqs: tuple[tuple[int, int], ...]
    mag_mean: float = 0.5
    mag_std: float = 0.1
    phase_std: float = 0.2 * math.pi

    def __post_init__(self):
        res = self.resolution
        if not is_power_of_two(res) or res < 4:
            raise ValueError(f'resolution={res} is not a power of two >= 4')
        freqs = tuple((int(fx), int(fy)) for fx, fy in self.freqs)
        object.__setattr__(self, 'freqs', freqs)
        if not freqs:
            raise ValueError('at least one frequency is needed')
        seen = {}
        for f in freqs:
            if any(abs(c) > res // 2 for c in f):
                raise ValueError(f'frequency {f} lies outside [-{res // 2}, {res // 2}] cycles per image '
                                 f'at resolution {res}')
            # f and -f (mod R) are the same real carrier: listing both would make the per-carrier
            # magnitude and phase ambiguous, so refuse it.
            key = min(((f[0] % res, f[1] % res)), ((-f[0]) % res, (-f[1]) % res))
            if key in seen:
                raise ValueError(f'frequencies {seen[key]} and {f} are the same carrier (equal or conjugate)')
            seen[key] = f
        if not (0 <= self.mag_std and 0 <= self.phase_std):
            raise ValueError('standard deviations must be non-negative')

    @property
    def real_carriers(self) -> np.ndarray:
        """[K] bool: carriers that are DC or Nyquist in both axes (purely real coefficients)."""
        half = self.resolution // 2
        return np.array([fx % half == 0 and fy % half == 0 for fx, fy in self.freqs])

    def to_json(self) -> dict:
        """The record written to dataset.json under "cosine", enough to rebuild the spec."""
        return dict(
            formula='I[y,x] = mean_k m_k*cos(2*pi*(fx_k*x + fy_k*y)/resolution + phi_k); '
                    'x = column, y = row; uint8 = round((I+1)*127.5)',
            resolution=self.resolution,
            freqs=[list(f) for f in self.freqs],
            real_carriers=[list(f) for f, real in zip(self.freqs, self.real_carriers) if real],
            magnitude=dict(distribution='clipped_normal', mean=self.mag_mean, std=self.mag_std, min=0.0, max=1.0),
            phase=dict(distribution='clipped_normal', mean=0.0, std=self.phase_std, min=-math.pi, max=math.pi,
                       real_carriers='uniform{0,pi}'),
        )

    @classmethod
    def from_json(cls, record: dict) -> CosineSpec:
        return cls(resolution=int(record['resolution']), freqs=tuple(tuple(f) for f in record['freqs']),
                   mag_mean=float(record['magnitude']['mean']), mag_std=float(record['magnitude']['std']),
                   phase_std=float(record['phase']['std']))


def parse_freqs(text: str) -> tuple[tuple[int, int], ...]:
    """'3,3' or '0,0;3,3;41,41' (also space separated) -> ((3, 3), ...)."""
    pairs = []
    for item in re.split(r'[;\s]+', text.strip()):
        match = re.fullmatch(r'\(?\s*(-?\d+)\s*,\s*(-?\d+)\s*\)?', item)
        if match is None:
            raise ValueError(f'{item!r} is not a frequency pair FX,FY of integers (cycles per image)')
        pairs.append((int(match[1]), int(match[2])))
    return tuple(pairs)


def sample_cosine_params(spec: CosineSpec, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Magnitudes and phases, each [count, K] float64.

    All draws for image i come from row i of one [count, 3, K] normal array, so the first n images
    of a larger dataset equal a dataset of n images with the same seed.
    """
    z = np.random.default_rng(seed).standard_normal((count, 3, len(spec.freqs)))
    mags = np.clip(spec.mag_mean + spec.mag_std * z[:, 0], 0.0, 1.0)
    phases = np.clip(spec.phase_std * z[:, 1], -math.pi, math.pi)
    # The sign of a standard normal is a fair coin: 0 or pi for the real carriers.
    phases = np.where(spec.real_carriers, np.where(z[:, 2] > 0, math.pi, 0.0), phases)
    return mags, phases


def render_cosines(spec: CosineSpec, mags: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """[N, K] magnitudes and phases -> [N, R, R] float64 images in [-1, 1]."""
    r = spec.resolution
    idx = np.arange(r)
    fx = np.array([f[0] for f in spec.freqs])[:, None, None]
    fy = np.array([f[1] for f in spec.freqs])[:, None, None]
    theta = 2 * math.pi * (fx * idx[None, None, :] + fy * idx[None, :, None]) / r          # [K, R, R]
    # m cos(theta + phi) = (m cos phi) cos theta - (m sin phi) sin theta: two small matmuls
    # instead of a [N, K, R, R] temporary.
    a = mags * np.cos(phases) / len(spec.freqs)
    b = mags * np.sin(phases) / len(spec.freqs)
    return np.einsum('nk,kyx->nyx', a, np.cos(theta)) - np.einsum('nk,kyx->nyx', b, np.sin(theta))


def estimate_cosine_params(images: np.ndarray, spec: CosineSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read each carrier's magnitude and phase back from uint8 images ([N, R, R] or [N, 1, R, R]).

    The inverse of `render_cosines` up to uint8 rounding; this is the measurement a per-carrier
    distribution metric applies to generated images.
    """
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    spectrum = np.fft.fft2(from_uint8(images))
    r, k = spec.resolution, len(spec.freqs)
    coeffs = np.stack([spectrum[:, fy % r, fx % r] for fx, fy in spec.freqs], axis=1)   # [N, K]
    scale = np.where(spec.real_carriers, 1.0, 2.0) * k / (r * r)
    return np.abs(coeffs) * scale, np.angle(coeffs)


# ---------------------------------------------------------------------------------------------
# Built-in demo data ('builtin:blobs<R>').

BLOBS_COUNT = 512
BLOBS_NUM_CLASSES = 4
_BLOBS_SEED = 0x5717EF  # fixed: the built-in data must be identical on every machine and run


def blobs_texture_freq(resolution: int, label: int) -> tuple[int, int]:
    """(fx, fy) in cycles per image of the stripe texture of class `label`.

    0: vertical stripes, period 4 px; 1: horizontal, period 4 px; 2: diagonal, period 4 px along
    each axis; 3: the Nyquist checkerboard. So the classes differ only in their high frequencies.
    """
    quarter, half = resolution // 4, resolution // 2
    return [(quarter, 0), (0, quarter), (quarter, quarter), (half, half)][label]


def blobs_label(index: int) -> int:
    return index % BLOBS_NUM_CLASSES  # balanced classes, known without generating the image


def blobs_image(resolution: int, index: int) -> np.ndarray:
    """Image `index` of 'builtin:blobs<resolution>': [R, R, 3] uint8.

    Low frequencies: a vertical blend between two dull colours plus 1-3 soft Gaussian blobs
    (sigma 8-16 % of the image) in brighter colours. High frequencies: every blob is painted with a
    stripe texture (contrast +-30 %) whose direction and period is set by the class label. A short
    training run learns the blobs first; the texture is what spectral metrics and the
    frequency-bias methods are about.
    """
    if not is_power_of_two(resolution) or resolution < 4:
        raise ValueError(f'blobs resolution must be a power of two >= 4, got {resolution}')
    rng = np.random.default_rng([_BLOBS_SEED, resolution, index])
    r = resolution
    pos = (np.arange(r) + 0.5) / r
    y, x = pos[:, None], pos[None, :]
    top, bottom = rng.uniform(0.1, 0.45, size=(2, 3))
    image = np.broadcast_to(top + (bottom - top) * y[:, :, None], (r, r, 3)).copy()

    fx, fy = blobs_texture_freq(r, blobs_label(index))
    # A random phase would fade the Nyquist checkerboard (it only scales it by cos(phase)).
    phase = 0.0 if (fx, fy) == (r // 2, r // 2) else rng.uniform(0, 2 * math.pi)
    col, row = np.arange(r)[None, :], np.arange(r)[:, None]
    texture = np.cos(2 * math.pi * (fx * col + fy * row) / r + phase)

    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        sigma = rng.uniform(0.08, 0.16)
        colour = rng.uniform(0.45, 1.0, size=3)
        mask = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))[:, :, None]
        fill = colour * (0.7 + 0.3 * texture)[:, :, None]
        image = image * (1 - mask) + fill * mask
    return np.rint(image.clip(0, 1) * 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class BuiltinData:
    """A procedural dataset addressed as 'builtin:<name>'."""

    name: str
    count: int
    resolution: int
    image: Callable[[int], np.ndarray]   # index -> [R, R, C] uint8
    label: Callable[[int], int]          # index -> class
    description: dict


def builtin_names() -> str:
    return 'builtin:blobs<R> with R a power of two from 4 to 1024 (e.g. builtin:blobs32)'


def builtin_data(name: str) -> BuiltinData:
    """Look up a built-in dataset by the part after 'builtin:'; ValueError for unknown names."""
    match = re.fullmatch(r'blobs(\d+)', name)
    if match is None or not is_power_of_two(int(match[1])) or not 4 <= int(match[1]) <= 1024:
        raise ValueError(f"unknown built-in dataset 'builtin:{name}'; available: {builtin_names()}")
    res = int(match[1])
    return BuiltinData(
        name=name, count=BLOBS_COUNT, resolution=res,
        image=functools.partial(blobs_image, res), label=blobs_label,  # picklable, unlike a lambda
        description=dict(generator='blobs', count=BLOBS_COUNT, resolution=res, num_classes=BLOBS_NUM_CLASSES,
                         texture_freqs=[list(blobs_texture_freq(res, c)) for c in range(BLOBS_NUM_CLASSES)]),
    )
