"""training.augment.AugmentPipe: upstream's buffers and kwargs, every transform against an
expectation written here, presets, shapes, probabilities, and R1 through the geometric pipe.

Expected transform semantics (upstream's, verified against its implementation outside the repo):
coordinates are pixel centres with the origin at the image centre, y pointing down; a geometric
transform with inverse matrix A gives out(p) = in(A p), the border filled by reflection."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylefreq import persistence
from training import augment
from training.augment import AugmentPipe, augpipe_specs

GEOM_FLAGS = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1)
COLOR_FLAGS = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
ALL_FLAGS = dict(**GEOM_FLAGS, **COLOR_FLAGS, imgfilter=1, noise=1, cutout=1)


def erfinv(x):
    return torch.erfinv(torch.tensor(float(x), dtype=torch.float64)).item()


def noise_images(n, c, h, w, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, h, w, generator=gen) * 0.5).to(dtype)


def centred_coords(h, w):
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing='ij')
    return x - (w - 1) / 2, y - (h - 1) / 2


class SmoothField:
    """A sum of low-frequency cosines (<= 0.05 cycles/pixel) that can be evaluated anywhere."""

    def __init__(self, seed, channels=3, terms=4):
        gen = torch.Generator().manual_seed(seed)
        self.freq = (torch.rand(terms, 2, generator=gen, dtype=torch.float64) * 2 - 1) * 0.05
        self.phase = torch.rand(channels, terms, generator=gen, dtype=torch.float64) * 2 * math.pi
        self.amp = 0.25

    def __call__(self, x, y):  # x, y: [H, W] -> [C, H, W]
        arg = 2 * math.pi * (self.freq[:, 0, None, None] * x + self.freq[:, 1, None, None] * y)  # [T, H, W]
        return (self.amp * torch.cos(arg[None] + self.phase[:, :, None, None])).sum(1)

    def image(self, h, w):
        x, y = centred_coords(h, w)
        return self(x, y)[None].float()


def run(images, debug_percentile=None, p=1.0, **kwargs):
    pipe = AugmentPipe(**kwargs)
    pipe.p.fill_(p)
    return pipe(images, debug_percentile=debug_percentile)


# -------------------------------------------------------------------------------------------------
# Buffers, constants, constructor.

def test_buffers_have_upstream_names_shapes_dtypes():
    pipe = AugmentPipe()
    got = [(name, list(t.shape), t.dtype) for name, t in pipe.named_buffers()]
    assert got == [('p', [], torch.float32), ('Hz_geom', [12], torch.float32), ('Hz_fbank', [4, 43], torch.float32)]
    assert list(pipe.state_dict()) == ['p', 'Hz_geom', 'Hz_fbank']
    assert list(pipe.parameters()) == []
    assert pipe.p.item() == 1.0


def _double_shift_products(h):
    """sum_k h[k] h[k + 2n] for n = 0, 1, ...: an orthogonal wavelet low-pass gives (1, 0, 0, ...)."""
    h = np.asarray(h, dtype=np.float64)
    return [float(np.dot(h[:h.size - 2 * n], h[2 * n:])) for n in range(h.size // 2)]


def test_wavelet_constants_are_orthogonal_lowpass_filters():
    for taps in (augment.SYM2_LOWPASS, augment.SYM6_LOWPASS):
        assert sum(taps) == pytest.approx(math.sqrt(2), abs=1e-12)
        assert _double_shift_products(taps) == pytest.approx([1] + [0] * (len(taps) // 2 - 1), abs=1e-12)
    hz = AugmentPipe().Hz_geom.double()
    expected = torch.tensor(augment.SYM6_LOWPASS, dtype=torch.float64) / math.sqrt(2)
    assert torch.allclose(hz, expected, atol=1e-7)


def test_filter_bank_is_a_symmetric_octave_partition_of_unity():
    bank = AugmentPipe().Hz_fbank.double()
    assert torch.allclose(bank, bank.flip(1), atol=1e-7)                  # symmetric rows
    impulse = torch.zeros(43, dtype=torch.float64)
    impulse[21] = 1
    assert torch.allclose(bank.sum(0), impulse, atol=1e-6)                # bands add up to identity
    taps = torch.arange(43, dtype=torch.float64) - 21

    def response(omega):
        return bank @ torch.cos(omega * taps)

    assert torch.allclose(response(0.0), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(response(math.pi), torch.tensor([0, 0, 0, 1.0], dtype=torch.float64), atol=1e-6)
    # Crossovers an octave apart: equal response of neighbouring bands at pi/8, pi/4, pi/2.
    for band, omega in [(0, math.pi / 8), (1, math.pi / 4), (2, math.pi / 2)]:
        r = response(omega)
        assert r[band] == pytest.approx(r[band + 1].item(), abs=2e-3) and r[band] > 0.45


UPSTREAM_DEFAULTS = dict(
    xflip=0, rotate90=0, xint=0, xint_max=0.125,
    scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
    brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5,
    hue_max=1, saturation_std=1,
    imgfilter=0, imgfilter_bands=[1, 1, 1, 1], imgfilter_std=1,
    noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,
)


def test_constructor_defaults_and_attributes():
    pipe = AugmentPipe()
    for name, value in UPSTREAM_DEFAULTS.items():
        got = getattr(pipe, name)
        assert got == value, name
        assert type(got) is (list if name == 'imgfilter_bands' else float), name
    pipe = AugmentPipe(xflip=1, imgfilter_bands=(1, 0, 2, 1), noise_std=0.3)
    assert pipe.xflip == 1.0 and pipe.imgfilter_bands == [1, 0, 2, 1] and pipe.noise_std == 0.3
    with pytest.raises(ValueError, match='imgfilter_bands'):
        AugmentPipe(imgfilter_bands=[1, 1, 1])


def test_persistent_class_rebuilds_from_kwargs_and_state():
    kwargs = dict(augpipe_specs['bgc'], xint_max=0.2)
    pipe = AugmentPipe(**kwargs)
    pipe.p.fill_(0.37)
    assert persistence.is_persistent(pipe)
    assert persistence.class_name_of(pipe) == 'training.augment.AugmentPipe'
    assert persistence.init_kwargs_of(pipe) == kwargs
    clone = AugmentPipe(**persistence.init_kwargs_of(pipe))
    clone.load_state_dict(pipe.state_dict(), strict=True)
    assert clone.p.item() == pytest.approx(0.37)
    assert vars(clone)['xint_max'] == 0.2


# -------------------------------------------------------------------------------------------------
# Presets, identity, shapes.

def test_augpipe_specs_table():
    blit = dict(xflip=1, rotate90=1, xint=1)
    geom = dict(scale=1, rotate=1, aniso=1, xfrac=1)
    color = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    assert augpipe_specs == {
        'blit': blit, 'geom': geom, 'color': color,
        'filter': dict(imgfilter=1), 'noise': dict(noise=1), 'cutout': dict(cutout=1),
        'bg': {**blit, **geom},
        'bgc': {**blit, **geom, **color},
        'bgcf': {**blit, **geom, **color, 'imgfilter': 1},
        'bgcfn': {**blit, **geom, **color, 'imgfilter': 1, 'noise': 1},
        'bgcfnc': {**blit, **geom, **color, 'imgfilter': 1, 'noise': 1, 'cutout': 1},
    }


@pytest.mark.parametrize('name', list(augpipe_specs))
def test_presets_construct_and_run(name):
    torch.manual_seed(0)
    for channels in (3, 1):
        x = noise_images(3, channels, 24, 28, seed=channels)
        pipe = AugmentPipe(**augpipe_specs[name])
        pipe.p.fill_(0.8)
        y = pipe(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all()
        assert not torch.equal(y, x)   # p = 0.8 on three samples: something happened


@pytest.mark.parametrize('channels', [3, 1])
def test_p_zero_is_exact_identity(channels):
    torch.manual_seed(1)
    x = noise_images(4, channels, 24, 24, seed=2)
    assert torch.equal(run(x, p=0.0, **ALL_FLAGS), x)


@pytest.mark.parametrize('n, c, h, w, dtype', [
    (1, 3, 24, 24, torch.float32),
    (3, 1, 24, 40, torch.float32),
    (5, 3, 32, 22, torch.float32),
    (2, 3, 24, 26, torch.float64),
])
def test_shapes_and_dtypes(n, c, h, w, dtype):
    torch.manual_seed(3)
    x = noise_images(n, c, h, w, dtype=dtype)
    for debug in (None, 0.3):
        y = run(x, debug_percentile=debug, p=1.0, **ALL_FLAGS)
        assert y.shape == (n, c, h, w) and y.dtype == dtype and torch.isfinite(y).all()


def test_other_channel_counts_geometry_only():
    x = noise_images(2, 2, 16, 16)
    assert run(x, debug_percentile=0.7, **GEOM_FLAGS).shape == x.shape
    with pytest.raises(ValueError, match='3 channels'):
        run(x, debug_percentile=0.7, brightness=1)


def test_rejects_non_image_input():
    with pytest.raises(ValueError, match='N, C, H, W'):
        AugmentPipe(xflip=1)(torch.zeros(3, 8, 8))


def test_same_seed_same_augmentation():
    x = noise_images(3, 3, 24, 24)
    outs = []
    for _ in range(2):
        torch.manual_seed(42)
        outs.append(run(x, p=0.7, **ALL_FLAGS))
    assert torch.equal(outs[0], outs[1])


# -------------------------------------------------------------------------------------------------
# Pixel blitting.

def test_integer_translation_is_a_reflect_padded_shift():
    x = noise_images(2, 3, 24, 40, seed=4)          # white noise: the shift must be exact
    # debug 0.9: t = 0.8 * xint_max = 0.1 of the image size -> (4, 2) pixels; content moves by +t.
    y = run(x, debug_percentile=0.9, xint=1)
    expected = F.pad(x, [4, 0, 2, 0], mode='reflect')[:, :, :24, :40]
    assert (y - expected).abs().max().item() < 2e-5
    y = run(x, debug_percentile=0.1, xint=1)        # t = -0.1 -> (-4, -2)
    expected = F.pad(x, [0, 4, 0, 2], mode='reflect')[:, :, 2:, 4:]
    assert (y - expected).abs().max().item() < 2e-5
    assert torch.equal(run(x, debug_percentile=0.5, xint=1), x)


def test_xflip():
    x = noise_images(2, 3, 20, 24)
    assert torch.equal(run(x, debug_percentile=0.25, xflip=1), x)     # floor(2 * 0.25) = 0: no flip
    smooth = SmoothField(seed=5).image(20, 24)
    y = run(smooth, debug_percentile=0.75, xflip=1)
    assert (y - smooth.flip(3)).abs().max().item() < 0.04
    assert (smooth.flip(3) - smooth).abs().max().item() > 0.3
    # On a ramp the flip is exact up to a constant sub-pixel offset (the sym6 filter is not
    # symmetric, so its delay does not cancel under a reflection; upstream behaves the same).
    ramp_x = centred_coords(16, 32)[0].float()[None, None]
    diff = (run(ramp_x, debug_percentile=0.75, xflip=1) + ramp_x)[..., 4:-4]
    assert diff.std().item() < 1e-3 and 0 < abs(diff.mean().item()) < 0.15
    ramp_y = centred_coords(16, 32)[1].float()[None, None]
    assert (run(ramp_y, debug_percentile=0.75, xflip=1) - ramp_y)[..., 4:-4, :].abs().max().item() < 1e-3


@pytest.mark.parametrize('k', [1, 2, 3])
def test_rotate90(k):
    smooth = SmoothField(seed=6).image(24, 24)
    y = run(smooth, debug_percentile=(k + 0.5) / 4, rotate90=1)       # floor(4 * d) = k
    assert (y - torch.rot90(smooth, k, dims=(2, 3))).abs().max().item() < 0.04
    if k != 2:
        assert (y - torch.rot90(smooth, -k, dims=(2, 3))).abs().max().item() > 0.2
    x = noise_images(1, 3, 24, 24)
    assert torch.equal(run(x, debug_percentile=0.1, rotate90=1), x)


# -------------------------------------------------------------------------------------------------
# General geometric transforms: out(p) = in(A p) with A the inverse map, on a smooth field.

def _geometry_case(name, d):
    q = erfinv(2 * d - 1)
    if name == 'scale':
        s = 2 ** (q * 0.2)
        return dict(scale=1), [[1 / s, 0], [0, 1 / s]], [0, 0]
    if name == 'aniso':
        s = 2 ** (q * 0.2)
        return dict(aniso=1), [[1 / s, 0], [0, s]], [0, 0]
    if name == 'rotate':
        theta = (2 * d - 1) * math.pi
        c, s = math.cos(theta), math.sin(theta)
        return dict(rotate=1), [[c, -s], [s, c]], [0, 0]
    if name == 'xfrac':
        t = q * 0.125
        return dict(xfrac=1), [[1, 0], [0, 1]], [-t * 32, -t * 24]
    raise AssertionError(name)


@pytest.mark.parametrize('name, d', [('scale', 0.9), ('scale', 0.2), ('aniso', 0.85), ('rotate', 0.6),
                                     ('rotate', 0.9), ('xfrac', 0.7)])
def test_general_geometry(name, d):
    h, w = 24, 32
    field = SmoothField(seed=7)
    kwargs, a, t = _geometry_case(name, d)
    y = run(field.image(h, w), debug_percentile=d, **kwargs)
    x, yy = centred_coords(h, w)
    a = torch.tensor(a, dtype=torch.float64)
    src_x = a[0, 0] * x + a[0, 1] * yy + t[0]
    src_y = a[1, 0] * x + a[1, 1] * yy + t[1]
    expected = field(src_x, src_y)[None].float()
    # Compare where the source point lies inside the image (elsewhere the border is reflected).
    inside = (src_x.abs() < (w - 1) / 2 - 1) & (src_y.abs() < (h - 1) / 2 - 1)
    assert inside.float().mean() > 0.3
    err = (y - expected).abs()[..., inside]
    # Tolerance: bilinear resampling of the 2x-upsampled image, plus a sub-pixel offset that
    # rotations get from the asymmetric sym6 filter (largest near 180 degrees, ~0.03 here).
    assert err.max().item() < 0.05, err.max().item()
    # debug 0.5 is the identity of every one of these transforms.
    z = noise_images(1, 3, h, w)
    assert torch.equal(run(z, debug_percentile=0.5, **kwargs), z)


# -------------------------------------------------------------------------------------------------
# Colour transforms.

def _luma(x):
    return x.mean(dim=1, keepdim=True)


def test_brightness_adds_a_constant():
    x = noise_images(2, 3, 8, 8)
    b = erfinv(2 * 0.8 - 1) * 0.2
    assert torch.allclose(run(x, debug_percentile=0.8, brightness=1), x + b, atol=1e-6)
    g = noise_images(2, 1, 8, 8)
    assert torch.allclose(run(g, debug_percentile=0.8, brightness=1), g + b, atol=1e-6)


def test_contrast_scales_about_zero():
    """Contrast multiplies by c = 2^N(0, contrast_std): about 0, the mid-grey of [-1, 1] images
    (not about the image mean)."""
    x = noise_images(2, 3, 8, 8) + 0.3
    c = 2 ** (erfinv(2 * 0.8 - 1) * 0.5)
    assert torch.allclose(run(x, debug_percentile=0.8, contrast=1), x * c, atol=1e-6)
    g = noise_images(2, 1, 8, 8)
    assert torch.allclose(run(g, debug_percentile=0.8, contrast=1), g * c, atol=1e-6)


def test_lumaflip_negates_luma_keeps_chroma():
    x = noise_images(2, 3, 8, 8) + 0.2
    y = run(x, debug_percentile=0.75, lumaflip=1)
    assert torch.allclose(_luma(y), -_luma(x), atol=1e-6)
    assert torch.allclose(y - _luma(y), x - _luma(x), atol=1e-6)
    assert torch.equal(run(x, debug_percentile=0.25, lumaflip=1), x)
    g = noise_images(2, 1, 8, 8)
    assert torch.allclose(run(g, debug_percentile=0.75, lumaflip=1), -g, atol=1e-6)


def test_hue_rotates_about_the_luma_axis():
    x = noise_images(2, 3, 8, 8)
    # 120 degrees about (1, 1, 1) permutes the channels: R <- B, G <- R, B <- G.
    y = run(x, debug_percentile=5 / 6, hue=1)
    assert torch.allclose(y, x[:, [2, 0, 1]], atol=1e-5)
    # Any angle keeps luma and the length of the chroma vector, and changes the colour.
    y = run(x, debug_percentile=0.6, hue=1)
    assert torch.allclose(_luma(y), _luma(x), atol=1e-6)
    assert torch.allclose((y - _luma(y)).norm(dim=1), (x - _luma(x)).norm(dim=1), atol=1e-5)
    assert (y - x).abs().max() > 0.1
    g = noise_images(2, 1, 8, 8)
    assert torch.equal(run(g, debug_percentile=0.6, hue=1), g)       # no hue in grey


def test_saturation_scales_chroma_keeps_luma():
    x = noise_images(2, 3, 8, 8)
    s = 2 ** (erfinv(2 * 0.8 - 1) * 1.0)
    y = run(x, debug_percentile=0.8, saturation=1)
    assert torch.allclose(y, _luma(x) + s * (x - _luma(x)), atol=1e-5)
    assert torch.equal(run(x, debug_percentile=0.5, saturation=1), x)   # s = 1
    g = noise_images(2, 1, 8, 8)
    assert torch.equal(run(g, debug_percentile=0.8, saturation=1), g)


# -------------------------------------------------------------------------------------------------
# Image-space filtering and corruptions.

def test_imgfilter_gains_per_band():
    t = 2 ** (erfinv(2 * 0.8 - 1) * 1.0)            # amplification of the top band
    norm = math.sqrt((10 + 1 + 1 + t * t) / 13)      # keeps the expected power of a 1/f image
    g_low, g_top = 1 / norm, t / norm
    kwargs = dict(imgfilter=1, imgfilter_bands=[0, 0, 0, 1])
    const = torch.full([1, 3, 24, 28], 0.4)
    y = run(const, debug_percentile=0.8, **kwargs)
    assert torch.allclose(y, const * g_low ** 2, atol=1e-5)          # separable: the gain twice
    i, j = torch.meshgrid(torch.arange(24), torch.arange(28), indexing='ij')
    checker = ((-1.0) ** (i + j)).expand(1, 3, 24, 28) * 0.4
    y = run(checker, debug_percentile=0.8, **kwargs)
    assert torch.allclose(y, checker * g_top ** 2, atol=1e-5)
    x = noise_images(2, 3, 24, 28)
    assert torch.equal(run(x, debug_percentile=0.5, imgfilter=1), x)   # all gains 1


def test_noise_strength():
    x = noise_images(2, 3, 64, 64)
    torch.manual_seed(8)
    n = run(x, debug_percentile=0.9, noise=1) - x
    sigma = erfinv(0.9) * 0.1
    assert n.std().item() == pytest.approx(sigma, rel=0.03)
    assert abs(n.mean().item()) < 0.01
    torch.manual_seed(8)
    assert torch.equal(run(x, debug_percentile=0.0, noise=1), x)      # sigma = erfinv(0) = 0


@pytest.mark.parametrize('h, w, d, rows, cols', [
    (16, 16, 0.5, (4, 12), (4, 12)),
    (16, 16, 0.25, (0, 8), (0, 8)),
    (16, 24, 0.5, (4, 12), (6, 18)),
])
def test_cutout_zeroes_a_rectangle(h, w, d, rows, cols):
    x = noise_images(2, 3, h, w) + 2.0               # no zeros of its own
    expected = x.clone()
    expected[:, :, rows[0]:rows[1], cols[0]:cols[1]] = 0
    assert torch.equal(run(x, debug_percentile=d, cutout=1), expected)


# -------------------------------------------------------------------------------------------------
# Probabilities: each transform hits a sample with probability multiplier * p.

def _fraction_changed(x, y):
    return (y != x).flatten(1).any(dim=1).float().mean().item()


def test_probability_is_multiplier_times_p():
    torch.manual_seed(9)
    x = noise_images(4000, 1, 2, 2)
    assert _fraction_changed(x, run(x, p=0.6, brightness=0.5)) == pytest.approx(0.3, abs=0.03)
    x = noise_images(400, 1, 6, 6)
    # A selected x-flip flips with probability 1/2.
    assert _fraction_changed(x, run(x, p=0.5, xflip=1)) == pytest.approx(0.25, abs=0.08)
    # Rotation is drawn before and after the anisotropic scaling such that P(any) = rotate * p.
    assert _fraction_changed(x, run(x, p=0.4, rotate=1)) == pytest.approx(0.4, abs=0.09)


def test_p_is_the_buffer_ada_adjusts():
    pipe = AugmentPipe(brightness=1)
    x = noise_images(200, 1, 2, 2)
    pipe.p.copy_(torch.tensor(0.0))
    assert torch.equal(pipe(x), x)
    pipe.p.copy_(torch.tensor(1.0))
    assert _fraction_changed(x, pipe(x)) == 1.0


# -------------------------------------------------------------------------------------------------
# R1 through the augment pipe: gradient w.r.t. the un-augmented reals, then backward through it.

def _torch_grid_sample(x, grid):
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


def _torch_has_grid_sample_double_backward():
    x = torch.randn(1, 1, 3, 3, requires_grad=True)
    grid = torch.rand(1, 2, 2, 2) * 2 - 1
    (g,) = torch.autograd.grad(_torch_grid_sample(x, grid).square().sum(), x, create_graph=True)
    try:
        g.sum().backward()
    except RuntimeError as e:
        assert 'grid_sampler_2d_backward' in str(e)
        return False
    return True


def _r1_parameter_grads(seed=10):
    torch.manual_seed(seed)
    D = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Softplus(),
        torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.Softplus(),
        torch.nn.Conv2d(8, 1, 3, bias=False))   # a bias after the last nonlinearity has no R1 gradient
    pipe = AugmentPipe(**augpipe_specs['bgc'])
    pipe.p.fill_(0.5)
    x = noise_images(4, 3, 16, 16, seed=seed).requires_grad_(True)
    torch.manual_seed(seed)
    logits = D(pipe(x))
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    grad.square().sum().backward()
    return [p.grad for p in D.parameters()]


def test_r1_through_bgc_pipe_has_finite_parameter_gradients():
    grads = _r1_parameter_grads()
    for g in grads:
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_r1_with_torch_grid_sample(monkeypatch):
    """What the pipe would do with F.grid_sample. Torch versions without a double backward for
    grid_sampler_2d crash exactly as upstream does on torch >= 1.10 (the reason stylefreq has its
    own grid_sample); versions that have it must agree with stylefreq's."""
    ours = _r1_parameter_grads()
    monkeypatch.setattr(augment, 'grid_sample', _torch_grid_sample)
    if not _torch_has_grid_sample_double_backward():
        with pytest.raises(RuntimeError, match='grid_sampler_2d_backward is not implemented'):
            _r1_parameter_grads()
    else:
        theirs = _r1_parameter_grads()
        for a, b in zip(ours, theirs):
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-4 * b.abs().max().item())


def test_first_order_gradient_through_full_pipe():
    torch.manual_seed(11)
    x = noise_images(2, 3, 24, 24).requires_grad_(True)
    y = run(x, p=1.0, **ALL_FLAGS)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
