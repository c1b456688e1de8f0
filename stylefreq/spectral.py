"""Batched, differentiable image spectra: grayscale, 2-D FFT power/magnitude, radial profiles.

Everything here works on whole batches on the tensor's own device (CPU or GPU), keeps autograd
intact (nothing is detached; callers decide), and never loops over images or radii in Python.

Conventions (shared by the SSD-GAN branch in `stylefreq.ssd` and the spectral metrics):

- Images are `[N, C, H, W]`; grayscale images and spectra are `[N, H, W]`.
- Spectra are computed in float32 (float64 stays float64, so `gradcheck` works); fp16/bf16 inputs
  are promoted first, because a half-precision FFT loses the high-frequency tail we measure.
- `shift=True` puts DC at pixel `(H // 2, W // 2)` (`torch.fft.fftshift`). That is the centre of
  the radial bins for every size: for even sizes it is `(H/2, W/2)`, exactly where SSD-GAN's code
  puts it; for odd sizes it is the DC pixel as well (SSD-GAN's hand-written shift crashes there).
- Radial bin of a pixel: `k = floor(sqrt((u - H//2)^2 + (v - W//2)^2))` on the shifted grid, with
  `u` the row and `v` the column. Bin `k` holds frequencies of about `k / max(H, W)` cycles/pixel;
  bins beyond `min(H, W) // 2` are the partial annuli of the corners.
"""

import functools

import numpy as np
import torch

__all__ = ['to_grayscale', 'power_spectrum', 'magnitude_spectrum', 'log_spectrum', 'RadialBins', 'radial_bins',
           'radial_profile', 'minmax_normalize', 'ssd_feature', 'ssd_feature_size', 'SSD_GRAY_WEIGHTS']

# ITU-R BT.601 luma coefficients as written in SSD-GAN's get_fft_feature.py.
SSD_GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def _check_dims(x, ndim, what, shape_hint):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'{what}: expected a tensor, got {type(x).__name__}')
    if x.ndim != ndim:
        raise ValueError(f'{what}: expected a {shape_hint} tensor, got shape {list(x.shape)}')


def _compute_dtype(x):
    """float64 stays float64 (for gradcheck); everything else is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def to_grayscale(x, weights='ssd'):
    """[N, C, H, W] -> [N, H, W].

    `weights`: 'ssd' (SSD-GAN's 0.2989 R + 0.5870 G + 0.1140 B; needs C = 3), 'mean' (channel
    mean, any C), or a sequence of C per-channel weights. A single-channel image is returned as is
    (`x[:, 0]`) whatever `weights` says, as in SSD-GAN's code. The dtype is kept.
    """
    _check_dims(x, 4, 'to_grayscale', '[N, C, H, W]')
    C = x.shape[1]
    if C == 1:
        return x[:, 0]
    if isinstance(weights, str):
        if weights == 'mean':
            return x.mean(dim=1)
        if weights != 'ssd':
            raise ValueError(f"to_grayscale: weights must be 'ssd', 'mean' or a sequence of {C} numbers, "
                             f"got {weights!r}")
        if C != 3:
            raise ValueError(f"to_grayscale: weights='ssd' needs 1 or 3 channels, got {C}; use weights='mean'")
        weights = SSD_GRAY_WEIGHTS
    weights = [float(w) for w in weights]
    if len(weights) != C:
        raise ValueError(f'to_grayscale: {len(weights)} weights for {C} channels')
    # A weighted sum written out channel by channel: the same float operations as the reference code.
    gray = x[:, 0] * weights[0]
    for c in range(1, C):
        gray = gray + x[:, c] * weights[c]
    return gray


@functools.lru_cache(maxsize=64)
def _hann_2d(height, width, device, dtype):
    # np.hanning(N) convention (symmetric window, zero at both ends; np.hanning(1) == [1]), as used
    # by the spectral-analysis code SSD-GAN builds on; torch's periodic=False is the same window.
    def hann(n):
        return torch.hann_window(n, periodic=False, dtype=torch.float64) if n > 1 else torch.ones(1, dtype=torch.float64)
    return (hann(height)[:, None] * hann(width)[None, :]).to(device=device, dtype=dtype)


def _fft2(gray, window, remove_dc, what):
    _check_dims(gray, 3, what, '[N, H, W]')
    g = gray.to(_compute_dtype(gray))
    if remove_dc:
        g = g - g.mean(dim=(-2, -1), keepdim=True)
    if window is not None:
        if window != 'hann':
            raise ValueError(f"{what}: window must be None or 'hann', got {window!r}")
        g = g * _hann_2d(g.shape[-2], g.shape[-1], g.device, g.dtype)
    return torch.fft.fft2(g)


def _shift(spec, shift):
    return torch.fft.fftshift(spec, dim=(-2, -1)) if shift else spec


def power_spectrum(gray, window=None, remove_dc=False, shift=True):
    """|FFT2(gray)|^2 per image: [N, H, W] -> [N, H, W] float32 (float64 for float64 input).

    The DFT is unnormalised (numpy's default), so Parseval reads `P.sum() == H * W * (g**2).sum()`.
    `remove_dc` subtracts each image's mean before the window; `window='hann'` multiplies by the
    outer product of two `np.hanning` windows (symmetric, zero at the borders); `shift` centres DC
    at `(H // 2, W // 2)`. Computed as re^2 + im^2, which has a finite gradient everywhere.
    """
    F = _fft2(gray, window, remove_dc, 'power_spectrum')
    return _shift(F.real.square() + F.imag.square(), shift)


def magnitude_spectrum(gray, window=None, remove_dc=False, shift=True, eps=0.0):
    """sqrt(|FFT2(gray)|^2 + eps): [N, H, W] -> [N, H, W]; otherwise as `power_spectrum`.

    `eps` sits inside the square root (as in SSD-GAN's `sqrt(re^2 + im^2 + 1e-10)`); with eps = 0
    the gradient is infinite where the spectrum vanishes, so differentiate with eps > 0.
    """
    P = power_spectrum(gray, window=window, remove_dc=remove_dc, shift=shift)
    return (P + eps).sqrt() if eps else P.sqrt()


def log_spectrum(gray, window=None, remove_dc=False, shift=True, eps=1e-10):
    """Natural log magnitude ln(sqrt(|F|^2 + eps) + eps): [N, H, W] -> [N, H, W]."""
    return (magnitude_spectrum(gray, window=window, remove_dc=remove_dc, shift=shift, eps=eps) + eps).log()


class RadialBins:
    """Radial (azimuthal) bins of an H x W shifted spectrum, precomputed once per resolution.

    Attributes:
      height, width, center     grid size and the centre pixel (H // 2, W // 2)
      index     [H * W] int64   floor distance of each pixel (row-major) from the centre
      counts    [K] float32     pixels per bin (every bin 0..K-1 is non-empty)
      frequencies [K] float32   bin k in cycles/pixel: k / max(H, W)
      num_bins  K               1 + the largest index
    Use `radial_bins(H, W, device)` to get a cached instance.
    """

    def __init__(self, height, width, device=None):
        height, width = int(height), int(width)
        if height < 1 or width < 1:
            raise ValueError(f'RadialBins: the grid must be at least 1x1, got {height}x{width}')
        self.height, self.width = height, width
        self.center = (height // 2, width // 2)
        u = np.arange(height, dtype=np.int64)[:, None] - self.center[0]
        v = np.arange(width, dtype=np.int64)[None, :] - self.center[1]
        # floor(sqrt(r^2)) of an exact integer r^2: float64 sqrt is correctly rounded, and r^2 is far
        # below 2^52, so this equals the integer square root (and SSD-GAN's astype(int)).
        index = np.floor(np.sqrt((u * u + v * v).astype(np.float64))).astype(np.int64).reshape(-1)
        counts = np.bincount(index)
        self.num_bins = int(counts.shape[0])
        self.device = torch.device('cpu') if device is None else torch.device(device)
        self.index = torch.from_numpy(index).to(self.device)
        self.counts = torch.from_numpy(counts.astype(np.float32)).to(self.device)
        self.frequencies = (torch.arange(self.num_bins, dtype=torch.float32, device="cpu") / max(height, width)).to(self.device)

    def __repr__(self):
        return f'RadialBins({self.height}x{self.width}, {self.num_bins} bins, device={self.device})'


@functools.lru_cache(maxsize=32)
def _radial_bins_cached(height, width, device):
    return RadialBins(height, width, device)


def radial_bins(height, width, device=None):
    """The cached `RadialBins` for an H x W grid on `device` (built on first use)."""
    device = torch.device('cpu') if device is None else torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    return _radial_bins_cached(int(height), int(width), device)


def radial_profile(spec, bins=None, eps=0.0):
    """Mean of a shifted spectrum over each radial bin: [..., H, W] -> [..., K].

    `bins`: a `RadialBins` for (H, W); by default the cached one for the tensor's device. The
    profile is sum / (count + eps) per bin, computed for the whole batch with one `index_add`
    (differentiable to any order: its backward is an `index_select`).
    """
    if not isinstance(spec, torch.Tensor) or spec.ndim < 2:
        raise ValueError(f'radial_profile: expected a [..., H, W] tensor, got '
                         f'{list(spec.shape) if isinstance(spec, torch.Tensor) else type(spec).__name__}')
    H, W = spec.shape[-2:]
    if bins is None:
        bins = radial_bins(H, W, spec.device)
    elif (bins.height, bins.width) != (H, W):
        raise ValueError(f'radial_profile: bins are for {bins.height}x{bins.width}, the spectrum is {H}x{W}')
    batch_shape = spec.shape[:-2]
    flat = spec.reshape(-1, H * W)
    index = bins.index if bins.index.device == spec.device else bins.index.to(spec.device)
    counts = bins.counts.to(device=spec.device, dtype=spec.dtype)
    sums = flat.new_zeros(flat.shape[0], bins.num_bins).index_add(1, index, flat)
    return (sums / (counts + eps)).reshape(*batch_shape, bins.num_bins)


def minmax_normalize(p, eps=0.0):
    """(p - min) / (max - min + eps) per sample over the last dim (differentiable; ties share gradient).
    With eps = 0 a flat sample (max = min) maps to zeros instead of 0/0."""
    lo = p.amin(dim=-1, keepdim=True)
    hi = p.amax(dim=-1, keepdim=True)
    if eps:
        return (p - lo) / (hi - lo + eps)
    span = hi - lo
    return (p - lo) / torch.where(span > 0, span, torch.ones_like(span))


def ssd_feature_size(height, width=None):
    """Length of `ssd_feature` for an H x W image: K - 3 (20, 31, 43, 88 at 32, 48, 64, 128 px)."""
    width = height if width is None else width
    return radial_bins(height, width).num_bins - 3


# Constants of SSD-GAN's get_fft_feature.py.
_SSD_FFT_EPS = 1e-8     # added to both the real and imaginary parts of the DFT
_SSD_LOG_EPS = 1e-10    # inside the square root, after it, and on the bin counts


def ssd_feature(x):
    """SSD-GAN's spectral feature phi(x): [N, C, H, W] (C = 1 or 3) -> [N, K - 3] in [0, 1].

    Bin for bin the PyTorch feature of the official code (cyq373/SSD-GAN, get_fft_feature.py):
      g = 0.2989 R + 0.5870 G + 0.1140 B (C = 1: the channel itself)
      F = FFT2(g), unnormalised;  re, im = Re F + 1e-8, Im F + 1e-8
      M = ln(sqrt(re^2 + im^2 + 1e-10) + 1e-10), shifted so DC sits at (H // 2, W // 2)
      P_k = sum_{k(u,v) = k} M(u, v) / (n_k + 1e-10),  k(u,v) = floor(distance to the centre)
      phi = minmax(P_1 .. P_{K-3})   (bin 0 = DC and the two outermost corner bins dropped; no eps)
    giving 20, 31 and 88 values at 32, 48 and 128 px. Odd sizes use the DC pixel as the centre.
    Non-square images use the same rule (the official code swaps H and W there, which only matters
    for non-square input).

    Unlike the official code, nothing is detached and nothing leaves the device (the bin indices
    are precomputed once per resolution): the feature is differentiable end to end, batched, and
    computed in float32 (float64 input stays float64). An exactly flat profile would be 0/0 = NaN in
    the official code (and a NaN loss for the whole step); here it gives zeros.
    """
    _check_dims(x, 4, 'ssd_feature', '[N, C, H, W]')
    if x.shape[1] not in (1, 3):
        raise ValueError(f'ssd_feature: expected 1 or 3 channels, got {x.shape[1]}')
    N, _, H, W = x.shape
    num_bins, index_plus, index_minus = _ssd_half_plane_bins(H, W, x.device)
    if num_bins < 5:
        raise ValueError(f'ssd_feature: a {H}x{W} image has only {num_bins} radial bins, which leaves fewer than '
                         f'2 values after dropping 3 of them; use images of at least 8x8')
    gray = to_grayscale(x.to(_compute_dtype(x)), weights='ssd')

    # The spectrum of a real image is conjugate-symmetric, F(-u, -v) = conj(F(u, v)), so the
    # half-plane rfft2 holds all of it. The +1e-8 on the imaginary part breaks the symmetry of the
    # magnitude, so the mirrored half is evaluated with -Im: the result is the full-plane formula
    # exactly, at half the FFT cost and without materialising the shifted full plane.
    R = torch.fft.rfft2(gray)
    re2 = (R.real + _SSD_FFT_EPS).square()
    im = R.imag
    mag_plus = ((re2 + (im + _SSD_FFT_EPS).square() + _SSD_LOG_EPS).sqrt() + _SSD_LOG_EPS).log()
    Wm = (W + 1) // 2    # rfft columns 1 .. Wm-1 are mirrored to full columns W-1 .. W-Wm+1
    mag_minus = ((re2[..., 1:Wm] + (_SSD_FFT_EPS - im[..., 1:Wm]).square() + _SSD_LOG_EPS).sqrt()
                 + _SSD_LOG_EPS).log()
    sums = mag_plus.new_zeros(N, num_bins)
    sums = sums.index_add(1, index_plus, mag_plus.reshape(N, -1))
    sums = sums.index_add(1, index_minus, mag_minus.reshape(N, -1))
    counts = radial_bins(H, W, x.device).counts.to(sums.dtype)
    profile = sums / (counts + _SSD_LOG_EPS)
    return minmax_normalize(profile[:, 1:num_bins - 2])


@functools.lru_cache(maxsize=32)
def _ssd_half_plane_bins_cached(height, width, device):
    """Radial bins (of the fftshifted full plane) of the rfft2 half plane and of its mirror image."""
    bins = _radial_bins_cached(height, width, torch.device('cpu'))
    full = bins.index.numpy().reshape(height, width)
    # Unshifted position (a, b) sits at ((a + H//2) % H, (b + W//2) % W) after fftshift.
    rows = (np.arange(height) + height // 2) % height
    cols = (np.arange(width) + width // 2) % width
    full_unshifted = full[rows][:, cols]
    Wr, Wm = width // 2 + 1, (width + 1) // 2
    plus = full_unshifted[:, :Wr]
    # rfft entry (a, j), j = 1 .. Wm-1, mirrored: full position ((-a) % H, W - j).
    minus = full_unshifted[(-np.arange(height)) % height][:, width - np.arange(1, Wm)]
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a).reshape(-1)).to(device)
    return bins.num_bins, to(plus), to(minus)


def _ssd_half_plane_bins(height, width, device):
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    return _ssd_half_plane_bins_cached(int(height), int(width), device)
