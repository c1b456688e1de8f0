"""ADA's augmentation pipeline ("Training Generative Adversarial Networks with Limited Data").

`AugmentPipe` takes upstream's constructor arguments, defaults and buffers (`p` [], `Hz_geom` [12],
`Hz_fbank` [4, 43]), so `augment_kwargs = {class_name: 'training.augment.AugmentPipe', ...}` and the
`augment_pipe` of an upstream snapshot load by name. Every transform is applied to each sample
independently with probability `p * multiplier`; the random numbers are drawn in upstream's order
and shapes, so a given torch seed selects the same augmentations.

Stages, in order (each one only if one of its multipliers is non-zero):

1. Geometry. Pixel blitting (x-flip, 90-degree rotations, integer translation) and general
   transforms (isotropic scaling, rotation before and after anisotropic scaling, fractional
   translation) are composed into one inverse 3x3 matrix per sample, then executed once: reflect
   padding, 2x upsampling with the sym6 wavelet low-pass, one bilinear resampling, filtered 2x
   downsampling. The resampling is `stylefreq.ops.grid_sample`, which is twice differentiable:
   R1 differentiates through this pipe (see that module for why torch's own cannot be used).
2. Colour. Brightness, contrast, luma flip, hue rotation and saturation as one 4x4 homogeneous
   matrix per sample acting on RGB (luma axis (1, 1, 1) / sqrt(3)); grayscale images are treated
   as R = G = B and averaged back.
3. Image-space filtering: random per-band gains of a 4-band filter bank built from the sym2
   wavelet, normalised to keep the expected power of a 1/f image.
4. Corruptions: additive Gaussian noise with a per-sample half-normal strength, and cutout (a
   rectangle of `cutout_size` times the image size set to zero).

Differences from upstream, on purpose (each at the level of float32 rounding of the resampling chain;
end to end, with the same seed, outputs agree with upstream's to ~1e-5 relative):
- A sample whose composed geometric transform is exactly the identity (not selected, or selected
  with a no-op value) is returned unchanged instead of going through the resampling round trip
  (upstream's round trip changes pixels by up to ~7e-6),
  and the geometric stage is skipped when that holds for the whole batch (p = 0 in early ADA);
  likewise the image filter leaves samples without a selected band untouched. So p = 0 is an
  exact identity and unselected samples are bit-identical to their input.
- 90-degree rotations use exact cos/sin values (0, +-1) instead of float32 cos(pi/2) ~ -4.4e-8.
"""

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stylefreq.ops import upfirdn2d
from stylefreq.ops.grid_sample import grid_sample
from stylefreq.persistence import persistent_class

# ---------------------------------------------------------------------------------------------------
# Published wavelet low-pass (decomposition) filters, as tabulated by PyWavelets
# (`pywt.Wavelet(name).dec_lo`). sym6 is the anti-aliasing filter of the geometric stage, sym2 the
# generator of the image-filter bank.

SYM2_LOWPASS = [
    -0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025,
]
SYM6_LOWPASS = [
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
]

# ---------------------------------------------------------------------------------------------------
# Pipeline presets of train.py's --augpipe (names and flag sets as upstream).

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

augpipe_specs = {
    'blit':   dict(_BLIT),
    'geom':   dict(_GEOM),
    'color':  dict(_COLOR),
    'filter': dict(imgfilter=1),
    'noise':  dict(noise=1),
    'cutout': dict(cutout=1),
    'bg':     dict(**_BLIT, **_GEOM),
    'bgc':    dict(**_BLIT, **_GEOM, **_COLOR),
    'bgcf':   dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1),
    'bgcfn':  dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1),
    'bgcfnc': dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1, cutout=1),
}

# Relative power of the four filter-bank bands in a typical (1/f spectrum) image; the random band
# gains are normalised so that this expected power is preserved.
_EXPECTED_BAND_POWER = [10 / 13, 1 / 13, 1 / 13, 1 / 13]


def _filter_bank(lowpass: Sequence[float], num_bands: int = 4) -> np.ndarray:
    """Octave band-pass filters that sum to a unit impulse, one per row.

    From the orthogonal wavelet low-pass h: lo2 = (h * h~) / 2 and hi2 = (g * g~) / 2 with the
    mirror high-pass g[k] = (-1)^k h[k] (x~ = time reversal) satisfy lo2 + hi2 = delta. Row 0 starts
    as the impulse; each further octave dilates every existing row by 2 (zero insertion, which
    halves its frequency band), smooths it with lo2, and puts hi2 into the new row, centred. After
    three octaves: 43 symmetric taps, rows summing to a unit impulse, with crossovers at pi/8, pi/4
    and pi/2: row 0 is the lowest band (DC up to ~pi/8), row 3 the top octave (pi/2 to Nyquist).
    """
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.zeros([num_bands, 1])
    bank[0, 0] = 1
    for octave in range(1, num_bands):
        length = bank.shape[1]
        dilated = np.zeros([num_bands, 2 * length - 1])
        dilated[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in dilated])
        start = (bank.shape[1] - hi2.size) // 2
        bank[octave, start:start + hi2.size] += hi2
    return bank


# ---------------------------------------------------------------------------------------------------
# Batched homogeneous matrices. Each takes per-sample tensors [N] (or Python numbers broadcast to N)
# and returns [N, k, k] float32.

def _identity(n: int, k: int, device) -> torch.Tensor:
    return torch.eye(k, device=device).repeat(n, 1, 1)


def _scale_2d(sx, sy, n, device):
    m = _identity(n, 3, device)
    m[:, 0, 0] = sx
    m[:, 1, 1] = sy
    return m


def _translate_2d(tx, ty, n, device):
    m = _identity(n, 3, device)
    m[:, 0, 2] = tx
    m[:, 1, 2] = ty
    return m


def _rotate_2d(cos, sin, n, device):
    """Rotation by the angle with the given cosine and sine (x to y, i.e. clockwise on screen)."""
    m = _identity(n, 3, device)
    m[:, 0, 0] = cos
    m[:, 0, 1] = -sin
    m[:, 1, 0] = sin
    m[:, 1, 1] = cos
    return m


def _translate_3d(t, n, device):
    m = _identity(n, 4, device)
    m[:, :3, 3] = t[:, None]
    return m


def _scale_3d(s, n, device):
    m = _identity(n, 4, device)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def _rotate_3d_about(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation by theta [N] about the unit vector axis [3]; [N, 4, 4] homogeneous."""
    n = theta.shape[0]
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    outer = torch.outer(axis, axis)                                   # a a^T
    cross = torch.zeros(3, 3, device=axis.device)                     # [a]_x, so [a]_x v = a x v
    cross[0, 1], cross[0, 2], cross[1, 2] = -axis[2], axis[1], -axis[0]
    cross = cross - cross.t()
    r = cos * torch.eye(3, device=axis.device) + sin * cross + (1 - cos) * outer
    m = _identity(n, 4, axis.device)
    m[:, :3, :3] = r
    return m


# ---------------------------------------------------------------------------------------------------

@persistent_class
class AugmentPipe(torch.nn.Module):
    """ADA augmentation pipeline; see the module docstring. All transforms are off by default.

    Probability multipliers (per-sample probability = multiplier * p):
        xflip, rotate90, xint:                  pixel blitting
        scale, rotate, aniso, xfrac:            general geometric transforms
        brightness, contrast, lumaflip, hue, saturation: colour transforms
        imgfilter (and per-band imgfilter_bands): image-space filtering
        noise, cutout:                          corruptions
    Strengths:
        xint_max     integer translation range, relative to the image size
        scale_std    log2 std of isotropic scaling
        rotate_max   rotation range, 1 = full circle
        aniso_std    log2 std of anisotropic scaling
        xfrac_std    std of fractional translation, relative to the image size
        brightness_std, contrast_std (log2), hue_max (1 = full circle), saturation_std (log2)
        imgfilter_std  log2 std of band amplification
        noise_std    std of additive noise;  cutout_size  side of the cutout relative to the image

    Buffer `p` is the overall augmentation probability (ADA adjusts it; the training loop sets its
    initial value; the constructor sets 1 as upstream does).
    """

    def __init__(self,
                 xflip=0, rotate90=0, xint=0, xint_max=0.125,
                 scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
                 brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5,
                 hue_max=1, saturation_std=1,
                 imgfilter=0, imgfilter_bands=(1, 1, 1, 1), imgfilter_std=1,
                 noise=0, cutout=0, noise_std=0.1, cutout_size=0.5):
        super().__init__()
        self.register_buffer('p', torch.ones([]))

        self.xflip = float(xflip)
        self.rotate90 = float(rotate90)
        self.xint = float(xint)
        self.xint_max = float(xint_max)

        self.scale = float(scale)
        self.rotate = float(rotate)
        self.aniso = float(aniso)
        self.xfrac = float(xfrac)
        self.scale_std = float(scale_std)
        self.rotate_max = float(rotate_max)
        self.aniso_std = float(aniso_std)
        self.xfrac_std = float(xfrac_std)

        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.lumaflip = float(lumaflip)
        self.hue = float(hue)
        self.saturation = float(saturation)
        self.brightness_std = float(brightness_std)
        self.contrast_std = float(contrast_std)
        self.hue_max = float(hue_max)
        self.saturation_std = float(saturation_std)

        self.imgfilter = float(imgfilter)
        self.imgfilter_bands = list(imgfilter_bands)
        self.imgfilter_std = float(imgfilter_std)

        self.noise = float(noise)
        self.cutout = float(cutout)
        self.noise_std = float(noise_std)
        self.cutout_size = float(cutout_size)

        bank = _filter_bank(SYM2_LOWPASS)
        if len(self.imgfilter_bands) != bank.shape[0]:
            raise ValueError(f'AugmentPipe: imgfilter_bands needs {bank.shape[0]} entries (one per band), '
                             f'got {self.imgfilter_bands!r}')

        # 12 taps, normalised to unit DC gain, kept 1-D (applied separably).
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(SYM6_LOWPASS))
        self.register_buffer('Hz_fbank', torch.as_tensor(bank, dtype=torch.float32))

    # -----------------------------------------------------------------------------------------------

    def _select(self, value, identity, multiplier, gate_shape, device, prob=None):
        """Per sample: `value` with probability multiplier * p (or `prob`), else `identity`."""
        if prob is None:
            prob = multiplier * self.p
        gate = torch.rand(gate_shape, device=device) < prob
        return torch.where(gate, value, identity)

    def forward(self, images: torch.Tensor, debug_percentile: Optional[float] = None) -> torch.Tensor:
        """Augment a batch [N, C, H, W] (float, typically in [-1, 1]); returns the same shape and dtype.

        `debug_percentile` in [0, 1] replaces every random *strength* by that quantile of its
        distribution and applies every enabled transform regardless of p (upstream's debug mode,
        for visual inspection and deterministic tests).
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f'AugmentPipe: images must be a floating-point [N, C, H, W] tensor, got '
                             f'{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}')
        n, channels, height, width = images.shape
        device = images.device
        debug = None
        if debug_percentile is not None:
            debug = torch.as_tensor(debug_percentile, dtype=torch.float32, device=device)

        def rand(*shape):
            return torch.rand(shape, device=device)

        def randn(*shape):
            return torch.randn(shape, device=device)

        def normal_quantile(std):
            # Quantile `debug` of N(0, std^2) (upstream's convention: erfinv without sqrt(2)).
            return torch.erfinv(debug * 2 - 1) * std

        # ---- Geometry: g_inv maps output pixel coordinates (origin at the image centre) to input ones.
        g_inv = None

        def compose(m):
            nonlocal g_inv
            g_inv = m if g_inv is None else g_inv @ m

        if self.xflip > 0:
            flip = torch.floor(rand(n) * 2)
            flip = self._select(flip, torch.zeros_like(flip), self.xflip, [n], device)
            if debug is not None:
                flip = torch.full_like(flip, torch.floor(debug * 2))
            compose(_scale_2d(1 - 2 * flip, 1, n, device))

        if self.rotate90 > 0:
            quarter = torch.floor(rand(n) * 4)
            quarter = self._select(quarter, torch.zeros_like(quarter), self.rotate90, [n], device)
            if debug is not None:
                quarter = torch.full_like(quarter, torch.floor(debug * 4))
            # Exact cos/sin of k * 90 degrees (the inverse map rotates by +k * 90 degrees).
            k = quarter.long() % 4
            cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[k]
            sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[k]
            compose(_rotate_2d(cos, sin, n, device))

        if self.xint > 0:
            shift = (rand(n, 2) * 2 - 1) * self.xint_max
            shift = self._select(shift, torch.zeros_like(shift), self.xint, [n, 1], device)
            if debug is not None:
                shift = torch.full_like(shift, (debug * 2 - 1) * self.xint_max)
            compose(_translate_2d(-torch.round(shift[:, 0] * width), -torch.round(shift[:, 1] * height), n, device))

        if self.scale > 0:
            s = torch.exp2(randn(n) * self.scale_std)
            s = self._select(s, torch.ones_like(s), self.scale, [n], device)
            if debug is not None:
                s = torch.full_like(s, torch.exp2(normal_quantile(self.scale_std)))
            compose(_scale_2d(1 / s, 1 / s, n, device))

        # Rotation is applied before and after the anisotropic scaling, each with probability
        # p_rot such that P(at least one) = rotate * p.
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(0, 1))
        if self.rotate > 0:
            theta = (rand(n) * 2 - 1) * math.pi * self.rotate_max
            theta = self._select(theta, torch.zeros_like(theta), None, [n], device, prob=p_rot)
            if debug is not None:
                theta = torch.full_like(theta, (debug * 2 - 1) * math.pi * self.rotate_max)
            compose(_rotate_2d(torch.cos(theta), torch.sin(theta), n, device))

        if self.aniso > 0:
            s = torch.exp2(randn(n) * self.aniso_std)
            s = self._select(s, torch.ones_like(s), self.aniso, [n], device)
            if debug is not None:
                s = torch.full_like(s, torch.exp2(normal_quantile(self.aniso_std)))
            compose(_scale_2d(1 / s, s, n, device))

        if self.rotate > 0:
            theta = (rand(n) * 2 - 1) * math.pi * self.rotate_max
            theta = self._select(theta, torch.zeros_like(theta), None, [n], device, prob=p_rot)
            if debug is not None:
                theta = torch.zeros_like(theta)   # debug mode shows a single rotation
            compose(_rotate_2d(torch.cos(theta), torch.sin(theta), n, device))

        if self.xfrac > 0:
            shift = randn(n, 2) * self.xfrac_std
            shift = self._select(shift, torch.zeros_like(shift), self.xfrac, [n, 1], device)
            if debug is not None:
                shift = torch.full_like(shift, normal_quantile(self.xfrac_std))
            compose(_translate_2d(-shift[:, 0] * width, -shift[:, 1] * height, n, device))

        if g_inv is not None:
            images = self._resample(images, g_inv)

        # ---- Colour: c maps homogeneous RGB (r, g, b, 1) of the input to the output.
        c = None

        def compose_color(m):
            nonlocal c
            c = m if c is None else m @ c

        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)
        luma_outer = torch.outer(luma, luma)

        if self.brightness > 0:
            b = randn(n) * self.brightness_std
            b = self._select(b, torch.zeros_like(b), self.brightness, [n], device)
            if debug is not None:
                b = torch.full_like(b, normal_quantile(self.brightness_std))
            compose_color(_translate_3d(b, n, device))

        if self.contrast > 0:
            s = torch.exp2(randn(n) * self.contrast_std)
            s = self._select(s, torch.ones_like(s), self.contrast, [n], device)
            if debug is not None:
                s = torch.full_like(s, torch.exp2(normal_quantile(self.contrast_std)))
            compose_color(_scale_3d(s, n, device))   # about 0, the mid-grey of [-1, 1] images

        if self.lumaflip > 0:
            flip = torch.floor(rand(n, 1, 1) * 2)
            flip = self._select(flip, torch.zeros_like(flip), self.lumaflip, [n, 1, 1], device)
            if debug is not None:
                flip = torch.full_like(flip, torch.floor(debug * 2))
            # Householder reflection across the plane orthogonal to the luma axis.
            compose_color(torch.eye(4, device=device) - 2 * luma_outer * flip)

        if self.hue > 0 and channels > 1:
            theta = (rand(n) * 2 - 1) * math.pi * self.hue_max
            theta = self._select(theta, torch.zeros_like(theta), self.hue, [n], device)
            if debug is not None:
                theta = torch.full_like(theta, (debug * 2 - 1) * math.pi * self.hue_max)
            compose_color(_rotate_3d_about(luma[:3], theta))

        if self.saturation > 0 and channels > 1:
            s = torch.exp2(randn(n, 1, 1) * self.saturation_std)
            s = self._select(s, torch.ones_like(s), self.saturation, [n, 1, 1], device)
            if debug is not None:
                s = torch.full_like(s, torch.exp2(normal_quantile(self.saturation_std)))
            # Keep the luma component, scale the chroma (the part orthogonal to the luma axis).
            compose_color(luma_outer + (torch.eye(4, device=device) - luma_outer) * s)

        if c is not None:
            images = self._apply_color(images, c)

        # ---- Image-space filtering.
        if self.imgfilter > 0:
            images = self._filter(images, debug, rand, randn)

        # ---- Corruptions.
        if self.noise > 0:
            sigma = randn(n, 1, 1, 1).abs() * self.noise_std
            sigma = self._select(sigma, torch.zeros_like(sigma), self.noise, [n, 1, 1, 1], device)
            if debug is not None:
                sigma = torch.full_like(sigma, torch.erfinv(debug) * self.noise_std)
            noise = randn(n, channels, height, width) * sigma
            images = images + noise.to(images.dtype)

        if self.cutout > 0:
            size = torch.full([n, 2, 1, 1, 1], self.cutout_size, device=device)
            size = self._select(size, torch.zeros_like(size), self.cutout, [n, 1, 1, 1, 1], device)
            centre = rand(n, 2, 1, 1, 1)
            if debug is not None:
                size = torch.full_like(size, self.cutout_size)
                centre = torch.full_like(centre, debug)
            # Pixel centres in [0, 1] units; a pixel is cut iff it lies inside the box in x AND y.
            px = ((torch.arange(width, device=device) + 0.5) / width).reshape(1, 1, 1, width)
            py = ((torch.arange(height, device=device) + 0.5) / height).reshape(1, 1, height, 1)
            inside_x = (px - centre[:, 0]).abs() < size[:, 0] / 2
            inside_y = (py - centre[:, 1]).abs() < size[:, 1] / 2
            keep = torch.logical_not(inside_x & inside_y)
            images = images * keep.to(images.dtype)

        return images

    # -----------------------------------------------------------------------------------------------

    def _resample(self, images: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
        """Warp each sample by its inverse transform g_inv [N, 3, 3] (pixel units, centred origin)."""
        n, channels, height, width = images.shape
        device = images.device
        identity = (g_inv == torch.eye(3, device=device)).flatten(1).all(dim=1)   # [N]

        # Padding: how far outside the image the inverse-mapped output corners reach, plus room for
        # the resampling filter, per side, over the whole batch; at most one image size (reflect).
        half_w, half_h = (width - 1) / 2, (height - 1) / 2
        corners = torch.tensor([[-half_w, -half_h, 1.0], [half_w, -half_h, 1.0],
                                [half_w, half_h, 1.0], [-half_w, half_h, 1.0]], device=device)
        reach = (g_inv @ corners.t())[:, :2, :]                        # [N, xy, corner]
        reach = reach.permute(1, 0, 2).flatten(1)                      # [xy, N * corner]
        extent = torch.cat([-reach, reach]).amax(dim=1)                # [left, top, right, bottom]
        filter_pad = self.Hz_geom.shape[0] // 4                        # 3 for the 12-tap sym6
        extent = extent + torch.tensor([2 * filter_pad - half_w, 2 * filter_pad - half_h] * 2, device=device)
        limit = torch.tensor([width - 1, height - 1] * 2, dtype=extent.dtype, device=device)
        extent = torch.minimum(extent.clamp(min=0), limit).ceil()
        # One device->host transfer for both the padding amounts and the all-identity test.
        host = torch.cat([extent, identity.all().to(extent.dtype)[None]]).tolist()
        if host[4]:
            return images
        pad_l, pad_t, pad_r, pad_b = (int(v) for v in host[:4])

        x = F.pad(images, [pad_l, pad_r, pad_t, pad_b], mode='reflect')
        g = _translate_2d((pad_l - pad_r) / 2, (pad_t - pad_b) / 2, n, device) @ g_inv

        # 2x upsampling. Pixel-centre coordinates scale by 2; the upsampled grid is offset by half
        # a (new) pixel relative to a symmetric one (even-length filter), on both sides of the map.
        x = upfirdn2d.upsample2d(x, self.Hz_geom, up=2)
        g = _scale_2d(2, 2, n, device) @ g @ _scale_2d(0.5, 0.5, n, device)
        g = _translate_2d(-0.5, -0.5, n, device) @ g @ _translate_2d(0.5, 0.5, n, device)

        # Bilinear resampling onto a 2x grid of the padded output size, then filtered decimation
        # that also crops the padding back off. affine_grid/grid_sample use [-1, 1] coordinates.
        out_h, out_w = (height + 2 * filter_pad) * 2, (width + 2 * filter_pad) * 2
        in_h, in_w = x.shape[2], x.shape[3]
        theta = _scale_2d(2 / in_w, 2 / in_h, n, device) @ g @ _scale_2d(out_w / 2, out_h / 2, n, device)
        theta = theta[:, :2, :].to(x.dtype)
        grid = F.affine_grid(theta, [n, channels, out_h, out_w], align_corners=False)
        x = grid_sample(x, grid)   # twice differentiable (R1), see stylefreq/ops/grid_sample.py
        x = upfirdn2d.downsample2d(x, self.Hz_geom, down=2, padding=-2 * filter_pad, flip_filter=True)

        return torch.where(identity[:, None, None, None], images, x)

    def _apply_color(self, images: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = images.shape
        c = c.to(images.dtype)
        flat = images.reshape(n, channels, height * width)
        if channels == 3:
            flat = c[:, :3, :3] @ flat + c[:, :3, 3:]
        elif channels == 1:
            # Grey as R = G = B: each output channel is (row sum) * x + offset; average the three.
            gain = c[:, :3, :3].sum(dim=2).mean(dim=1)
            offset = c[:, :3, 3].mean(dim=1)
            flat = flat * gain[:, None, None] + offset[:, None, None]
        else:
            raise ValueError(f'AugmentPipe: colour transforms need RGB (3 channels) or grey (1 channel) '
                             f'images, got {channels} channels')
        return flat.reshape(n, channels, height, width)

    def _filter(self, images, debug, rand, randn):
        n, channels, height, width = images.shape
        device = images.device
        num_bands, taps = self.Hz_fbank.shape
        expected_power = torch.tensor(_EXPECTED_BAND_POWER, device=device)

        gains = torch.ones(n, num_bands, device=device)
        touched = torch.zeros(n, dtype=torch.bool, device=device)
        for band, band_strength in enumerate(self.imgfilter_bands):
            t = torch.exp2(randn(n) * self.imgfilter_std)
            t = self._select(t, torch.ones_like(t), self.imgfilter * band_strength, [n], device)
            if debug is not None:
                if band_strength > 0:
                    t = torch.full_like(t, torch.exp2(torch.erfinv(debug * 2 - 1) * self.imgfilter_std))
                else:
                    t = torch.ones_like(t)
            touched = touched | (t != 1)
            # Amplify this band, then renormalise so that a 1/f image keeps its expected power.
            step = torch.ones(n, num_bands, device=device)
            step[:, band] = t
            step = step / (expected_power * step.square()).sum(dim=1, keepdim=True).sqrt()
            gains = gains * step

        # Per-sample separable filter (bands are symmetric, so correlation = convolution).
        kernel = (gains @ self.Hz_fbank).to(images.dtype)                        # [N, taps]
        kernel = kernel[:, None, :].expand(n, channels, taps).reshape(n * channels, 1, taps)
        half = taps // 2
        x = images.reshape(1, n * channels, height, width)
        x = F.pad(x, [half, half, half, half], mode='reflect')
        x = F.conv2d(x, kernel[:, :, None, :], groups=n * channels)
        x = F.conv2d(x, kernel[:, :, :, None], groups=n * channels)
        x = x.reshape(n, channels, height, width)
        return torch.where(touched[:, None, None, None], x, images)
