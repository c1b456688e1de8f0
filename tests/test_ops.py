"""Tests for stylefreq.ops against references written here from the definitions.

The references are deliberately naive (numpy, explicit loops over filter taps) and
share no code with the implementation, so a wrong index, flip or padding in either
shows up as a mismatch.
"""

import inspect
import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from stylefreq.ops import bias_act, conv2d_resample, fma, upfirdn2d



@pytest.fixture(autouse=True, scope='module')
def _single_thread():
    # Tiny shapes: intra-op threads only add overhead (and jitter on a busy 2-core box).
    # Restored afterwards so other test modules keep their setting.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


# ---------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------

def ref_upfirdn(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip=False, gain=1.0):
    """Naive upfirdn on a numpy [N, C, H, W] array with a 2-D numpy filter.

    Straight from the definition: zero insertion, pad/crop (pad = x0, x1, y0, y1),
    valid true convolution (or correlation if flip), decimation.
    """
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    n, c, h, w = x.shape
    # Zero insertion: the image becomes h*upy x w*upx with x at multiples of up.
    u = np.zeros((n, c, h * upy, w * upx))
    u[:, :, ::upy, ::upx] = x
    # Padded image: pixel (i, j) of it is pixel (i - py0, j - px0) of u, zero outside.
    ph, pw = h * upy + py0 + py1, w * upx + px0 + px1
    v = np.zeros((n, c, ph, pw))
    for i in range(ph):
        for j in range(pw):
            si, sj = i - py0, j - px0
            if 0 <= si < u.shape[2] and 0 <= sj < u.shape[3]:
                v[:, :, i, j] = u[:, :, si, sj]
    # Valid convolution: out[i, j] = sum_ab v[i + a, j + b] * f[fh-1-a, fw-1-b].
    k = np.asarray(f, dtype=np.float64) * gain
    fh, fw = k.shape
    if not flip:
        k = k[::-1, ::-1]
    oh, ow = ph - fh + 1, pw - fw + 1
    out = np.zeros((n, c, oh, ow))
    for a in range(fh):
        for b in range(fw):
            out += v[:, :, a:a + oh, b:b + ow] * k[a, b]
    return out[:, :, ::downy, ::downx]


def ref_conv2d_resample(x, w, f, up, down, pad, groups, flip_weight, flip_filter):
    """The definition of conv2d_resample as a chain, built on ref_upfirdn.

    pad (x0, x1, y0, y1) is the user's padding; the chain adds the centring amounts
    of upsample2d/downsample2d (the documented definition) and applies it once,
    before everything else.
    """
    f2 = np.ones((1, 1)) if f is None else (np.outer(f, f) if f.ndim == 1 else f)
    fh, fw = f2.shape
    px0, px1, py0, py1 = pad
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    y = ref_upfirdn(x, f2 if up > 1 else np.ones((1, 1)), up=(up, up), pad=(px0, px1, py0, py1),
                    flip=flip_filter, gain=up * up if up > 1 else 1)
    wt = torch.from_numpy(w)
    if not flip_weight:
        wt = wt.flip([2, 3])
    y = F.conv2d(torch.from_numpy(y), wt, groups=groups).numpy()
    if down > 1:
        y = ref_upfirdn(y, f2, down=(down, down), flip=flip_filter)
    return y


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# name -> (formula(x, alpha), default alpha, default gain)
REF_ACTS = {
    'linear':   (lambda x, a: x, 0.0, 1.0),
    'relu':     (lambda x, a: np.maximum(x, 0), 0.0, math.sqrt(2)),
    'lrelu':    (lambda x, a: np.where(x > 0, x, a * x), 0.2, math.sqrt(2)),
    'tanh':     (lambda x, a: np.tanh(x), 0.0, 1.0),
    'sigmoid':  (lambda x, a: np_sigmoid(x), 0.0, 1.0),
    'elu':      (lambda x, a: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), 0.0, 1.0),
    'selu':     (lambda x, a: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))), 0.0, 1.0),
    'softplus': (lambda x, a: np.log1p(np.exp(x)), 0.0, 1.0),
    'swish':    (lambda x, a: x * np_sigmoid(x), 0.0, math.sqrt(2)),
}


def rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# ---------------------------------------------------------------------------
# bias_act
# ---------------------------------------------------------------------------

def test_activation_table_defaults():
    assert set(bias_act.activation_funcs) == set(REF_ACTS)
    for name, (_, def_alpha, def_gain) in REF_ACTS.items():
        spec = bias_act.activation_funcs[name]
        assert spec.def_alpha == pytest.approx(def_alpha), name
        assert spec.def_gain == pytest.approx(def_gain), name


@pytest.mark.parametrize('act', sorted(REF_ACTS))
def test_bias_act_default_alpha_gain(act):
    x, b = rand(2, 5, 3, 4, seed=1) * 3, rand(5, seed=2)
    formula, def_alpha, def_gain = REF_ACTS[act]
    expect = formula(x.numpy() + b.numpy()[None, :, None, None], def_alpha) * def_gain
    np.testing.assert_allclose(bias_act.bias_act(x, b, act=act).numpy(), expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('act', sorted(REF_ACTS))
def test_bias_act_custom_alpha_gain_clamp(act):
    x, b = rand(3, 4, 5, seed=3) * 3, rand(4, seed=4)
    formula, _, _ = REF_ACTS[act]
    alpha, gain, clamp = 0.35, 1.7, 1.2
    y = bias_act.bias_act(x, b, act=act, alpha=alpha, gain=gain, clamp=clamp)
    expect = np.clip(formula(x.numpy() + b.numpy()[None, :, None], alpha) * gain, -clamp, clamp)
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-12, atol=1e-12)


def test_bias_act_lrelu_alpha_matters_and_clamp_bites():
    x = torch.tensor([-4.0, -1.0, 0.5, 3.0], dtype=torch.float64)
    y = bias_act.bias_act(x, act='lrelu', alpha=0.5, gain=1.0)
    assert y.tolist() == [-2.0, -0.5, 0.5, 3.0]
    y = bias_act.bias_act(x, act='lrelu', clamp=1.0)  # default alpha 0.2, gain sqrt(2)
    np.testing.assert_allclose(y.numpy(), [-1.0, -0.2 * math.sqrt(2), 0.5 * math.sqrt(2), 1.0])
    assert bias_act.bias_act(x, clamp=0).abs().max().item() == 0


@pytest.mark.parametrize('dim', [0, 2, 3, -1])
def test_bias_act_bias_along_other_dims(dim):
    x = rand(2, 3, 4, 5, seed=5)
    b = rand(x.shape[dim], seed=6)
    shape = [1] * 4
    shape[dim] = -1
    expect = np.maximum(x.numpy() + b.numpy().reshape(shape), 0) * math.sqrt(2)
    np.testing.assert_allclose(bias_act.bias_act(x, b, dim=dim, act='relu').numpy(), expect, rtol=1e-12)


def test_bias_act_no_bias_and_any_rank():
    x = rand(7, seed=7)
    np.testing.assert_allclose(bias_act.bias_act(x, act='tanh', gain=2).numpy(), np.tanh(x.numpy()) * 2)
    x2 = rand(3, 6, seed=8)  # fully connected layers call it on [N, C] with dim=1
    b2 = rand(6, seed=9)
    np.testing.assert_allclose(bias_act.bias_act(x2, b2, act='linear').numpy(), x2.numpy() + b2.numpy()[None])


def test_bias_act_keeps_input_dtype():
    x = rand(2, 3, 4, 4, dtype=torch.float16)
    b = rand(3, dtype=torch.float32)
    y = bias_act.bias_act(x, b, act='lrelu', clamp=256)
    assert y.dtype == torch.float16
    expect = bias_act.bias_act(x.double(), b.half().double(), act='lrelu', clamp=256)
    np.testing.assert_allclose(y.double().numpy(), expect.numpy(), rtol=2e-3, atol=2e-3)


def test_bias_act_impl_flag():
    x, b = rand(2, 3, 4, seed=10), rand(3, seed=11)
    assert torch.equal(bias_act.bias_act(x, b, act='swish', impl='cuda'), bias_act.bias_act(x, b, act='swish'))
    with pytest.raises(ValueError, match='impl'):
        bias_act.bias_act(x, b, impl='triton')


def test_bias_act_bad_input():
    x = rand(2, 3, 4)
    with pytest.raises(ValueError, match="'gelu'"):
        bias_act.bias_act(x, act='gelu')
    with pytest.raises(ValueError, match='length'):
        bias_act.bias_act(x, rand(4), dim=1)
    with pytest.raises(ValueError, match='length'):
        bias_act.bias_act(x, rand(3, 1), dim=1)
    with pytest.raises(ValueError, match='dim'):
        bias_act.bias_act(x, rand(3), dim=3)
    with pytest.raises(ValueError, match='clamp'):
        bias_act.bias_act(x, clamp=-1)
    with pytest.raises(TypeError):
        bias_act.bias_act(np.zeros(3))


@pytest.mark.parametrize('act', ['lrelu', 'relu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish'])
def test_bias_act_gradcheck(act):
    # Inputs kept away from the kinks at 0 (relu/lrelu/elu/selu) and the clamp
    # boundary so that finite differences are meaningful.
    x = rand(2, 3, 2, seed=12)
    x = (x + 0.3 * x.sign()).requires_grad_(True)
    b = torch.tensor([0.05, -0.05, 0.0], dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, gain=1.3, clamp=50.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_clamp_zeroes_gradient_outside():
    x = torch.tensor([-3.0, 0.1, 3.0], dtype=torch.float64, requires_grad=True)
    bias_act.bias_act(x, act='linear', clamp=1.0).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]


# ---------------------------------------------------------------------------
# setup_filter
# ---------------------------------------------------------------------------

def test_setup_filter_outer_product_normalised():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    expect = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64
    np.testing.assert_allclose(f.numpy(), expect, rtol=1e-7)


def test_setup_filter_separable_rule():
    assert upfirdn2d.setup_filter(np.ones(7)).shape == (7, 7)
    f8 = upfirdn2d.setup_filter(np.arange(1, 9))
    assert f8.shape == (8,)
    np.testing.assert_allclose(f8.numpy(), np.arange(1, 9) / 36, rtol=1e-7)
    assert upfirdn2d.setup_filter([1, 2, 1], separable=True).shape == (3,)
    assert upfirdn2d.setup_filter(np.ones(8), separable=False).shape == (8, 8)
    with pytest.raises(ValueError, match='separable'):
        upfirdn2d.setup_filter(np.ones((3, 3)), separable=True)


def test_setup_filter_gain_flip_normalize_none():
    # gain is spread over the axes: gain**(ndim/2) per filter, total signal gain = gain.
    assert upfirdn2d.setup_filter([1, 2, 1], gain=4).sum().item() == pytest.approx(4)
    f1 = upfirdn2d.setup_filter([1, 2, 1], gain=4, separable=True)
    np.testing.assert_allclose(f1.numpy(), np.array([1, 2, 1]) / 4 * 2, rtol=1e-7)
    f = upfirdn2d.setup_filter([[1, 2], [3, 4]], flip_filter=True, normalize=False)
    np.testing.assert_array_equal(f.numpy(), [[4, 3], [2, 1]])
    np.testing.assert_array_equal(upfirdn2d.setup_filter([1, 2], normalize=False).numpy(), [[1, 2], [2, 4]])
    np.testing.assert_array_equal(upfirdn2d.setup_filter(None).numpy(), [[1.0]])
    np.testing.assert_array_equal(upfirdn2d.setup_filter(3.0, normalize=False).numpy(), [[9.0]])


def test_setup_filter_does_not_modify_input_and_rejects_bad_shapes():
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    upfirdn2d.setup_filter(taps, separable=True, flip_filter=True, gain=2)
    assert taps.tolist() == [1.0, 3.0, 3.0, 1.0]
    with pytest.raises(ValueError):
        upfirdn2d.setup_filter(np.ones((2, 2, 2)))
    with pytest.raises(ValueError):
        upfirdn2d.setup_filter([])


# ---------------------------------------------------------------------------
# upfirdn2d
# ---------------------------------------------------------------------------

def test_reference_upfirdn_matches_scipy():
    # Guard the guard: the loop reference agrees with scipy's 2-D convolution.
    x = rand(1, 1, 5, 6, seed=13).numpy()
    f = rand(3, 2, seed=14).numpy()
    np.testing.assert_allclose(ref_upfirdn(x, f)[0, 0], scipy.signal.convolve2d(x[0, 0], f, mode='valid'))
    np.testing.assert_allclose(ref_upfirdn(x, f, flip=True)[0, 0], scipy.signal.correlate2d(x[0, 0], f, mode='valid'))


UPFIRDN_CASES = [
    # up, down, padding, flip, gain
    (1, 1, 0, False, 1),
    (2, 1, [2, 1, 2, 1], False, 4),
    (1, 2, [1, 1, 1, 1], False, 1),
    (3, 2, [1, 2], True, 1.5),
    ([2, 1], [1, 3], [0, 1, 2, 3], False, 1),
    (2, 2, [-1, 2, 3, -2], True, 1),
    (1, 1, [-2, 0, 0, -1], False, 2),
    (4, 3, 3, False, 1),
    ([1, 3], 1, [3, -2, 1, 0], True, 1),
    (1, 1, [-3, 9, 0, 0], False, 1),  # crop reaching into the opposite side's padding
]


@pytest.mark.parametrize('up,down,padding,flip,gain', UPFIRDN_CASES)
@pytest.mark.parametrize('filt', ['2d', 'separable', 'none'])
def test_upfirdn2d_matches_reference(up, down, padding, flip, gain, filt):
    x = rand(2, 3, 5, 6, seed=15)
    if filt == '2d':
        f = rand(3, 4, seed=16).float()  # asymmetric, so a missing flip is caught
        f2 = f.double().numpy()
    elif filt == 'separable':
        f = rand(4, seed=17).float()
        f2 = np.outer(f.double().numpy(), f.double().numpy())
    else:
        f, f2 = None, np.ones((1, 1))
    upx, upy = (up, up) if isinstance(up, int) else up
    dx, dy = (down, down) if isinstance(down, int) else down
    pad = [padding] * 4 if isinstance(padding, int) else (
        [padding[0], padding[0], padding[1], padding[1]] if len(padding) == 2 else padding)
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    fh, fw = f2.shape
    assert y.shape == (2, 3, (5 * upy + pad[2] + pad[3] - fh + dy) // dy, (6 * upx + pad[0] + pad[1] - fw + dx) // dx)
    expect = ref_upfirdn(x.numpy(), f2, (upx, upy), (dx, dy), pad, flip, gain)
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-6, atol=1e-6)  # f is float32-rounded


def test_upfirdn2d_identity_and_float32():
    x = rand(1, 2, 4, 4, seed=18, dtype=torch.float32)
    assert torch.equal(upfirdn2d.upfirdn2d(x, None), x)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    y = upfirdn2d.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4)
    assert y.dtype == torch.float32
    expect = ref_upfirdn(x.double().numpy(), f.double().numpy(), (2, 2), (1, 1), (2, 1, 2, 1), False, 4)
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-5, atol=1e-6)


def test_upfirdn2d_impl_flag():
    x = rand(1, 2, 5, 5, seed=19)
    f = upfirdn2d.setup_filter([1, 2, 1]).double()
    assert torch.equal(upfirdn2d.upfirdn2d(x, f, impl='cuda'), upfirdn2d.upfirdn2d(x, f, impl='ref'))


def test_upfirdn2d_bad_input():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match='4-D'):
        upfirdn2d.upfirdn2d(torch.zeros(3, 8, 8), f)
    with pytest.raises(ValueError, match='smaller than'):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 2, 2), f)
    with pytest.raises(ValueError, match='padding'):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 8, 8), f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match='up'):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 8, 8), f, up=0)
    with pytest.raises(ValueError, match='down'):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 8, 8), f, down=1.5)
    with pytest.raises(ValueError, match='filter'):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 8, 8), torch.ones(2, 2, 2))


@pytest.mark.parametrize('fn,factor', [('upsample2d', 2), ('upsample2d', 3), ('downsample2d', 2), ('filter2d', 1)])
@pytest.mark.parametrize('taps', [[1, 3, 3, 1], [1, 2, 1], list(range(1, 9))])
def test_resample_helpers_sizes_and_centring(fn, factor, taps):
    f = upfirdn2d.setup_filter(taps).double()
    x = rand(1, 2, 6, 8, seed=20)
    kwargs = {} if fn == 'filter2d' else ({'up': factor} if fn == 'upsample2d' else {'down': factor})
    y = getattr(upfirdn2d, fn)(x, f, **kwargs)
    scale = factor if fn == 'upsample2d' else (1 / factor if fn == 'downsample2d' else 1)
    assert y.shape == (1, 2, int(6 * scale), int(8 * scale))
    # Spec: the helpers are upfirdn2d with these centring paddings (upsample also gains up**2).
    n = len(taps)
    if fn == 'upsample2d':
        pad, up, down, gain = [(n + factor - 1) // 2, (n - factor) // 2] * 2, factor, 1, factor ** 2
    elif fn == 'downsample2d':
        pad, up, down, gain = [(n - factor + 1) // 2, (n - factor) // 2] * 2, 1, factor, 1
    else:
        pad, up, down, gain = [n // 2, (n - 1) // 2] * 2, 1, 1, 1
    f2 = np.outer(taps, taps) / np.sum(taps) ** 2
    expect = ref_upfirdn(x.numpy(), f2, (up, up), (down, down), pad, False, gain)
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-6, atol=1e-7)


def test_resample_helpers_preserve_constant_interior():
    # A normalised filter must keep a flat image flat away from the zero border;
    # for upsampling this only holds thanks to the up**2 gain.
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    x = torch.full((1, 1, 8, 8), 2.5, dtype=torch.float64)
    np.testing.assert_allclose(upfirdn2d.upsample2d(x, f)[..., 3:-3, 3:-3].numpy(), 2.5)
    # Flatness needs every polyphase component of the filter to sum to 1/up: true for
    # [1, 3, 3, 1] at up=2, false at up=4 -- a box of 4 taps works for both.
    box = upfirdn2d.setup_filter([1, 1, 1, 1]).double()
    np.testing.assert_allclose(upfirdn2d.upsample2d(x, box, up=[4, 2])[..., 3:-3, 5:-5].numpy(), 2.5)
    assert not np.allclose(upfirdn2d.upsample2d(x, f, up=4)[..., 5:-5, 5:-5].numpy(), 2.5)
    np.testing.assert_allclose(upfirdn2d.downsample2d(x, f)[..., 1:-1, 1:-1].numpy(), 2.5)
    np.testing.assert_allclose(upfirdn2d.filter2d(x, f, gain=2)[..., 2:-2, 2:-2].numpy(), 5.0)


def test_filter2d_impulse_lands_centred():
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[0, 0, 4, 4] = 1
    f = upfirdn2d.setup_filter([1, 2, 1]).double()
    y = upfirdn2d.filter2d(x, f)[0, 0]
    np.testing.assert_allclose(y[3:6, 3:6].numpy(), np.outer([1, 2, 1], [1, 2, 1]) / 16)
    assert y.sum().item() == pytest.approx(1.0)
    assert y[:3].abs().sum() == 0 and y[6:].abs().sum() == 0


@pytest.mark.parametrize('up,down,padding,separable', [(2, 1, [2, 1, 1, 2], False), (1, 2, [1, -1, 2, 0], True), (2, 3, 1, False)])
def test_upfirdn2d_gradcheck(up, down, padding, separable):
    x = rand(1, 2, 4, 5, seed=21).requires_grad_(True)
    f = rand(4, seed=22) if separable else rand(3, 2, seed=22)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=1.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


# ---------------------------------------------------------------------------
# conv2d_resample
# ---------------------------------------------------------------------------

CONV_CASES = [
    # k, up, down, padding, groups, flip_weight    (StyleGAN2's combinations first)
    (1, 1, 2, 0, 1, True),          # D skip/residual 1x1 down
    (1, 2, 1, 0, 1, True),          # 1x1 up
    (3, 2, 1, 1, 1, False),         # G up conv (networks pass flip_weight=(up == 1))
    (3, 2, 1, 1, 3, False),         # fused modconv: groups = batch
    (3, 1, 2, 1, 1, True),          # D down conv
    (3, 1, 1, 1, 1, True),          # plain 3x3
    (3, 1, 1, 1, 3, True),
    (1, 1, 1, 0, 1, True),          # plain 1x1
    (3, 2, 1, 1, 1, True),
    (3, 1, 2, 1, 3, False),
    (3, 1, 1, [0, 2, 1, 0], 1, False),  # asymmetric padding without resampling
    (3, 1, 1, -1, 1, True),
    (2, 2, 2, [1, 0, 2, 1], 1, True),   # up and down together, even kernel
    (4, 3, 1, [1, 2], 3, True),
    (1, 2, 2, 0, 3, False),
]


@pytest.mark.parametrize('k,up,down,padding,groups,flip_weight', CONV_CASES)
@pytest.mark.parametrize('flip_filter', [False, True])
def test_conv2d_resample_matches_reference(k, up, down, padding, groups, flip_weight, flip_filter):
    x = rand(2, 2 * groups, 6, 5, seed=23)
    w = rand(4 * groups if k != 4 else 3, 2, k, k, seed=24)  # asymmetric random taps catch flips
    f = upfirdn2d.setup_filter([1, 3, 5, 2]).double()       # asymmetric too
    y = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                                        flip_weight=flip_weight, flip_filter=flip_filter)
    pad = [padding] * 4 if isinstance(padding, int) else (
        [padding[0], padding[0], padding[1], padding[1]] if len(padding) == 2 else padding)
    expect = ref_conv2d_resample(x.numpy(), w.numpy(), f.numpy(), up, down, pad, groups, flip_weight, flip_filter)
    assert y.shape == expect.shape
    assert y.shape[2] == (6 * up + pad[2] + pad[3] - k + 1) // down
    assert y.shape[3] == (5 * up + pad[0] + pad[1] - k + 1) // down
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('up,down', [(2, 1), (1, 2), (1, 1)])
def test_conv2d_resample_without_filter(up, down):
    x = rand(1, 2, 5, 5, seed=25)
    w = rand(3, 2, 3, 3, seed=26)
    y = conv2d_resample.conv2d_resample(x, w, f=None, up=up, down=down, padding=1)
    expect = ref_conv2d_resample(x.numpy(), w.numpy(), None, up, down, [1] * 4, 1, True, False)
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-10, atol=1e-10)


def test_conv2d_resample_flip_weight_semantics():
    x = rand(1, 2, 6, 6, seed=27)
    w = rand(3, 2, 3, 3, seed=28)
    # flip_weight=True is exactly F.conv2d (a correlation) ...
    y = conv2d_resample.conv2d_resample(x, w, padding=1)
    assert torch.allclose(y, F.conv2d(x, w, padding=1), rtol=0, atol=1e-12)
    # ... and False a true convolution, i.e. a correlation with the mirrored kernel.
    y = conv2d_resample.conv2d_resample(x, w, padding=1, flip_weight=False)
    assert torch.allclose(y, F.conv2d(x, w.flip([2, 3]), padding=1), rtol=0, atol=1e-12)
    assert not torch.allclose(y, F.conv2d(x, w, padding=1))


def test_conv2d_resample_float32_stylegan_shapes():
    # float32 fast paths against the float64 reference at the tolerance networks care about.
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for up, down, groups, flip_weight in [(2, 1, 2, False), (1, 2, 1, True)]:
        x = rand(2, 4 * groups, 8, 8, seed=29, dtype=torch.float32)
        w = rand(6 * groups, 4, 3, 3, seed=30, dtype=torch.float32)
        y = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=1, groups=groups,
                                            flip_weight=flip_weight)
        expect = ref_conv2d_resample(x.double().numpy(), w.double().numpy(), f.double().numpy(), up, down,
                                     [1] * 4, groups, flip_weight, False)
        assert y.dtype == torch.float32
        np.testing.assert_allclose(y.numpy(), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('k,up,down,groups', [(3, 2, 1, 2), (3, 1, 2, 1), (1, 1, 2, 1), (1, 2, 1, 1)])
def test_conv2d_resample_gradcheck(k, up, down, groups):
    x = rand(1, 2 * groups, 4, 4, seed=31).requires_grad_(True)
    w = rand(2 * groups, 2, k, k, seed=32).requires_grad_(True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    fn = lambda x, w: conv2d_resample.conv2d_resample(  # noqa: E731
        x, w, f=f, up=up, down=down, padding=k // 2, groups=groups, flip_weight=(up == 1))
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


def test_conv2d_resample_bad_input():
    x, w = torch.zeros(1, 4, 8, 8), torch.zeros(2, 4, 3, 3)
    with pytest.raises(ValueError, match='4-D'):
        conv2d_resample.conv2d_resample(x[0], w)
    with pytest.raises(ValueError, match='4-D'):
        conv2d_resample.conv2d_resample(x, w[0])
    with pytest.raises(ValueError, match='dtype'):
        conv2d_resample.conv2d_resample(x, w.double())
    with pytest.raises(ValueError, match='groups=2'):
        conv2d_resample.conv2d_resample(x, w, groups=2)
    with pytest.raises(ValueError, match='up'):
        conv2d_resample.conv2d_resample(x, w, up=0)
    with pytest.raises(ValueError, match='no output pixel'):
        conv2d_resample.conv2d_resample(torch.zeros(1, 4, 2, 2), w, down=2)


# ---------------------------------------------------------------------------
# fma
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('shapes', [
    ((2, 3, 4), (2, 3, 4), (2, 3, 4)),
    ((2, 3, 1), (1, 3, 4), (4,)),
    ((3, 1), (1,), (2, 3, 5)),
])
def test_fma_values_and_broadcast_grads(shapes):
    a, b, c = (rand(*s, seed=40 + i).requires_grad_(True) for i, s in enumerate(shapes))
    y = fma.fma(a, b, c)
    out_shape = np.broadcast_shapes(*shapes)
    assert y.shape == out_shape
    an, bn, cn = (t.detach().numpy() for t in (a, b, c))
    np.testing.assert_allclose(y.detach().numpy(), an * bn + cn, rtol=1e-14)
    dy = rand(*out_shape, seed=50)
    y.backward(dy)

    def unbroadcast(g, shape):  # sum over the axes that broadcasting expanded
        g = g.sum(axis=tuple(range(g.ndim - len(shape))))
        return g.sum(axis=tuple(i for i, s in enumerate(shape) if s == 1), keepdims=True)

    dyn = dy.numpy()
    np.testing.assert_allclose(a.grad.numpy(), unbroadcast(dyn * bn, a.shape), rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), unbroadcast(dyn * an, b.shape), rtol=1e-12)
    np.testing.assert_allclose(c.grad.numpy(), unbroadcast(np.broadcast_to(dyn, out_shape), c.shape), rtol=1e-12)


def test_fma_gradgradcheck():
    a = rand(2, 1, 3, seed=60).requires_grad_(True)
    b = rand(1, 4, 3, seed=61).requires_grad_(True)
    c = rand(3, seed=62).requires_grad_(True)
    assert torch.autograd.gradcheck(fma.fma, (a, b, c))
    assert torch.autograd.gradgradcheck(fma.fma, (a, b, c))


def test_package_layout():
    import stylefreq.ops as ops
    assert callable(ops.bias_act.bias_act) and callable(ops.upfirdn2d.upfirdn2d)
    assert callable(ops.conv2d_resample.conv2d_resample) and callable(ops.fma.fma)
    assert all(isinstance(getattr(ops, m), type(itertools)) for m in ('bias_act', 'upfirdn2d', 'conv2d_resample', 'fma'))


# ---------------------------------------------------------------------------
# Public signatures (callers written for StyleGAN2-ADA pass these by name)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('fn,expected', [
    (lambda: upfirdn2d.setup_filter, dict(f=inspect.Parameter.empty, device=torch.device('cpu'), normalize=True,
                                          flip_filter=False, gain=1, separable=None)),
    (lambda: upfirdn2d.upfirdn2d, dict(x=inspect.Parameter.empty, f=inspect.Parameter.empty, up=1, down=1, padding=0,
                                       flip_filter=False, gain=1, impl='cuda')),
    (lambda: upfirdn2d.filter2d, dict(x=inspect.Parameter.empty, f=inspect.Parameter.empty, padding=0,
                                      flip_filter=False, gain=1, impl='cuda')),
    (lambda: upfirdn2d.upsample2d, dict(x=inspect.Parameter.empty, f=inspect.Parameter.empty, up=2, padding=0,
                                        flip_filter=False, gain=1, impl='cuda')),
    (lambda: upfirdn2d.downsample2d, dict(x=inspect.Parameter.empty, f=inspect.Parameter.empty, down=2, padding=0,
                                          flip_filter=False, gain=1, impl='cuda')),
    (lambda: conv2d_resample.conv2d_resample, dict(x=inspect.Parameter.empty, w=inspect.Parameter.empty, f=None, up=1,
                                                   down=1, padding=0, groups=1, flip_weight=True, flip_filter=False)),
    (lambda: bias_act.bias_act, dict(x=inspect.Parameter.empty, b=None, dim=1, act='linear', alpha=None, gain=None,
                                     clamp=None, impl='cuda')),
    (lambda: fma.fma, dict(a=inspect.Parameter.empty, b=inspect.Parameter.empty, c=inspect.Parameter.empty)),
])
def test_public_signatures(fn, expected):
    params = inspect.signature(fn()).parameters
    assert list(params) == list(expected)
    assert {name: p.default for name, p in params.items()} == expected


# ---------------------------------------------------------------------------
# More upfirdn2d: adjoint, dtypes, memory formats, constant filter
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('up,down,pad,flip', [
    ((2, 2), (1, 1), (2, 1, 2, 1), False),
    ((1, 1), (2, 2), (1, 1, 1, 1), True),
    ((3, 1), (2, 3), (1, -1, 2, 0), False),
    ((2, 3), (3, 2), (0, 3, -2, 1), True),
])
def test_upfirdn2d_gradient_is_the_documented_adjoint(up, down, pad, flip):
    # Spec: d/dx <upfirdn2d(x), dy> = upfirdn2d(dy, f, up=down, down=up, flip_filter=not flip,
    # padding=[fw-px0-1, W*ux - W_out*dx + px0 - ux + 1, fh-py0-1, H*uy - H_out*dy + py0 - uy + 1]).
    # The right-hand side is evaluated with the numpy reference, not with the code under test.
    f = rand(3, 4, seed=70)
    x = rand(2, 3, 7, 6, seed=71).requires_grad_(True)
    y = upfirdn2d.upfirdn2d(x, f, up=list(up), down=list(down), padding=list(pad), flip_filter=flip, gain=1.5)
    dy = rand(*y.shape, seed=72)
    (grad,) = torch.autograd.grad(y, x, dy)
    (ux, uy), (dx, dy_) = up, down
    px0, py0 = pad[0], pad[2]
    fh, fw = f.shape
    H, W, H_out, W_out = x.shape[2], x.shape[3], y.shape[2], y.shape[3]
    adj_pad = (fw - px0 - 1, W * ux - W_out * dx + px0 - ux + 1, fh - py0 - 1, H * uy - H_out * dy_ + py0 - uy + 1)
    expect = ref_upfirdn(dy.numpy(), f.numpy(), up=(dx, dy_), down=(ux, uy), pad=adj_pad, flip=not flip, gain=1.5)
    assert expect.shape == grad.shape
    np.testing.assert_allclose(grad.numpy(), expect, rtol=1e-12, atol=1e-12)


def test_upfirdn2d_filter_gets_no_gradient():
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double().requires_grad_(True)
    x = rand(1, 2, 6, 6, seed=73).requires_grad_(True)
    upfirdn2d.upsample2d(x, f).sum().backward()
    assert f.grad is None and x.grad is not None


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-6), (torch.float16, 4e-3)])
@pytest.mark.parametrize('up,down,pad,taps', [(2, 1, [2, 1, 2, 1], [1, 3, 3, 1]), (1, 2, 1, [1, 3, 3, 1]),
                                              (1, 1, 2, list(range(1, 9))), (2, 2, [3, 2, 0, 1], list(range(1, 13)))])
def test_upfirdn2d_low_precision_against_float64(dtype, tol, up, down, pad, taps):
    f = upfirdn2d.setup_filter(taps)  # float32, as networks store it
    x = rand(2, 3, 12, 10, seed=74, dtype=dtype)
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=pad, gain=up * up)
    assert y.dtype == dtype
    f2 = f.double().numpy() if f.ndim == 2 else np.outer(f.double().numpy(), f.double().numpy())
    pads = [pad] * 4 if isinstance(pad, int) else pad
    expect = ref_upfirdn(x.double().numpy(), f2, (up, up), (down, down), pads, False, up * up)
    scale = np.abs(expect).max()
    np.testing.assert_allclose(y.double().numpy(), expect, rtol=0, atol=tol * scale)


@pytest.mark.parametrize('kwargs', [dict(up=2, padding=[2, 1, 2, 1], gain=4), dict(down=2, padding=1), dict(padding=2),
                                    dict(up=[1, 2], down=[2, 1], padding=[0, 1, -1, 2])])
def test_upfirdn2d_channels_last_input(kwargs):
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = rand(2, 5, 8, 8, seed=75, dtype=torch.float32)
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = upfirdn2d.upfirdn2d(xc, f, **kwargs)
    np.testing.assert_allclose(y.detach().numpy(), upfirdn2d.upfirdn2d(x, f, **kwargs).numpy(), rtol=1e-6, atol=1e-6)
    y.square().sum().backward()
    assert xc.grad.shape == x.shape


def test_setup_filter_rejects_zero_sum_when_normalizing():
    with pytest.raises(ValueError, match='sum to zero'):
        upfirdn2d.setup_filter([1, -1])
    np.testing.assert_array_equal(upfirdn2d.setup_filter([1, -1], normalize=False).numpy(), [[1, -1], [-1, 1]])


@pytest.mark.parametrize('kwargs,match', [
    (dict(up=True), 'up'), (dict(down=[2]), 'down'), (dict(up=[2, 0]), 'up'),
    (dict(padding=[1, 2.5]), 'padding'), (dict(padding='1'), 'padding'),
])
def test_upfirdn2d_more_bad_arguments(kwargs, match):
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match=match):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 8, 8), f, **kwargs)
    with pytest.raises(ValueError, match='filter'):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 8, 8), torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match='floating'):
        upfirdn2d.upfirdn2d(torch.zeros(1, 1, 8, 8, dtype=torch.int32), f)
    with pytest.raises(ValueError, match='impl'):
        upfirdn2d.upsample2d(torch.zeros(1, 1, 8, 8), f, impl='triton')


# ---------------------------------------------------------------------------
# Evaluation order: bitwise float32 parity on the CPU
# ---------------------------------------------------------------------------
# StyleGAN2-ADA's reference path fixes the float32 rounding of every op by the order in which it
# evaluates it (the clean-room spec of upfirdn2d / conv2d_resample): zero insertion, padding, a depthwise F.conv2d with the
# gain-scaled kernel cast to x's dtype, slicing; resampling convolutions in the per-case orders
# below. The literal chains here are built from those primitives in that order; the op under test
# must reproduce them bit for bit on the CPU (its shortcuts -- stride instead of slicing, implicit
# instead of explicit padding, canvas instead of insert-then-pad -- must not change a bit).

def literal_upfirdn(x, f, up=1, down=1, pad=(0, 0, 0, 0), flip=False, gain=1):
    n, c, h, w = x.shape
    u = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    u[:, :, ::up, ::up] = x
    u = F.pad(u, list(pad))
    if f.ndim == 1:
        k = (f * gain ** 0.5).to(x.dtype)
        k = k if flip else k.flip(0)
        u = F.conv2d(u, k.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        u = F.conv2d(u, k.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    else:
        k = (f * gain).to(x.dtype)
        k = k if flip else k.flip(0, 1)
        u = F.conv2d(u, k.reshape(1, 1, *k.shape).repeat(c, 1, 1, 1), groups=c)
    return u[:, :, ::down, ::down]


FIR4 = [1, 3, 3, 1]


def _centred(lead, trail):
    return (lead, trail, lead, trail)


@pytest.mark.parametrize('name,call,literal', [
    ('upsample2d img', lambda x, f: upfirdn2d.upsample2d(x, f),
     lambda x, f: literal_upfirdn(x, f, up=2, pad=_centred((len(f) + 1) // 2, (len(f) - 2) // 2), gain=4)),
    ('downsample2d img', lambda x, f: upfirdn2d.downsample2d(x, f),
     lambda x, f: literal_upfirdn(x, f, down=2, pad=_centred((len(f) - 1) // 2, (len(f) - 2) // 2))),
    ('filter pad 1 gain 4', lambda x, f: upfirdn2d.upfirdn2d(x, f, padding=1, gain=4), lambda x, f: literal_upfirdn(x, f, pad=(1,) * 4, gain=4)),
    ('filter pad 2', lambda x, f: upfirdn2d.upfirdn2d(x, f, padding=2), lambda x, f: literal_upfirdn(x, f, pad=(2,) * 4)),
    ('asymmetric, cropped', lambda x, f: upfirdn2d.upfirdn2d(x, f, up=2, down=2, padding=[3, -1, 0, 2], flip_filter=True, gain=3),
     lambda x, f: literal_upfirdn(x, f, up=2, down=2, pad=(3, -1, 0, 2), flip=True, gain=3)),
])
@pytest.mark.parametrize('taps', [FIR4, list(range(1, 13))])
def test_upfirdn2d_float32_bitwise_reference_order(name, call, literal, taps):
    f = upfirdn2d.setup_filter(taps)
    x = rand(2, 16, 19, 17, seed=80, dtype=torch.float32)
    assert torch.equal(call(x, f), literal(x, f)), name


def literal_conv(x, w, flip_weight, **kwargs):
    return F.conv2d(x, w if flip_weight else w.flip(2, 3), **kwargs)


def _transposed_weight(w, groups):
    o, i, kh, kw = w.shape
    return w.reshape(groups, o // groups, i, kh, kw).transpose(1, 2).reshape(groups * i, o // groups, kh, kw)


@pytest.mark.parametrize('case', ['conv0 up (d)', 'conv0 up fused (d)', 'conv1 (e)', 'torgb (e)', 'G skip 1x1 up (b)',
                                  'D conv1 down (c)', 'D skip 1x1 down (a)', 'asymmetric (f)'])
def test_conv2d_resample_float32_bitwise_reference_order(case):
    # The concrete steps of the spec's conv2d_resample evaluation orders for every layer shape the networks use.
    f = upfirdn2d.setup_filter(FIR4)
    groups = 2 if 'fused' in case else 1
    k = 1 if '1x1' in case or 'torgb' in case else 3
    x = rand(2, 8 * groups, 12, 12, seed=81, dtype=torch.float32)
    w = rand(6 * groups, 8, k, k, seed=82, dtype=torch.float32)
    cr = conv2d_resample.conv2d_resample
    if case.startswith('conv0'):
        got = cr(x, w, f=f, up=2, padding=1, groups=groups, flip_weight=False)
        t = F.conv_transpose2d(x, _transposed_weight(w, groups), stride=2, groups=groups)  # H -> 2H + 1
        expect = literal_upfirdn(t, f, pad=(1, 1, 1, 1), gain=4)
    elif case.startswith('conv1') or case.startswith('torgb'):
        got = cr(x, w, padding=k // 2)
        expect = F.conv2d(x, w, padding=k // 2)
    elif case.startswith('G skip'):
        got = cr(x, w, f=f, up=2, flip_weight=False)
        expect = literal_upfirdn(F.conv2d(x, w), f, up=2, pad=(2, 1, 2, 1), gain=4)
    elif case.startswith('D conv1'):
        got = cr(x, w, f=f, down=2, padding=1)
        expect = F.conv2d(literal_upfirdn(x, f, pad=(2, 2, 2, 2)), w, stride=2)
    elif case.startswith('D skip'):
        got = cr(x, w, f=f, down=2)
        expect = F.conv2d(literal_upfirdn(x, f, down=2, pad=(1, 1, 1, 1)), w)
    else:
        got = cr(x, w, padding=[2, 0, 1, 1], flip_weight=False)
        expect = literal_conv(F.pad(x, [2, 0, 1, 1]), w, flip_weight=False)
    assert torch.equal(got, expect), case


def test_up_conv_is_a_true_convolution_of_the_upsampled_image():
    # Spec 1.4, index-level statement: conv0's output equals
    # corr_valid(upfirdn2d(x, FIR4, up=2, padding=(3, 2, 3, 2), gain=4), rot180(w)).
    f = upfirdn2d.setup_filter(FIR4).double()
    x, w = rand(2, 3, 5, 6, seed=83), rand(4, 3, 3, 3, seed=84)
    got = conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=False)
    up = ref_upfirdn(x.numpy(), f.numpy(), up=(2, 2), pad=(3, 2, 3, 2), gain=4)
    expect = F.conv2d(torch.from_numpy(up), w.flip(2, 3)).numpy()
    assert got.shape == (2, 4, 10, 12)
    np.testing.assert_allclose(got.numpy(), expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('k,up,down,padding', [(3, 2, 1, [-4, -3, -5, -3]), (3, 2, 2, [-3, -4, -2, -2]), (2, 3, 1, -2)])
def test_conv2d_resample_negative_padding_crops_inside_transposed_conv(k, up, down, padding):
    # Case (d) with both P' entries negative: part of the crop moves into conv_transpose2d's padding.
    f = upfirdn2d.setup_filter([1, 3, 5, 2]).double()
    x, w = rand(1, 2, 9, 8, seed=85), rand(3, 2, k, k, seed=86)
    y = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding)
    pad = [padding] * 4 if isinstance(padding, int) else padding
    expect = ref_conv2d_resample(x.numpy(), w.numpy(), f.numpy(), up, down, pad, 1, True, False)
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------
# More conv2d_resample: float16, channels_last, argument checks
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('k,up,down,groups,flip_weight', [(3, 2, 1, 2, False), (3, 1, 2, 1, True), (1, 1, 2, 1, True),
                                                          (1, 2, 1, 1, False), (3, 1, 1, 1, True)])
def test_conv2d_resample_float16_and_channels_last(k, up, down, groups, flip_weight):
    f = upfirdn2d.setup_filter(FIR4)
    x = rand(2, 4 * groups, 8, 8, seed=87, dtype=torch.float32)
    w = rand(6 * groups, 4, k, k, seed=88, dtype=torch.float32) / (4 * k)
    kwargs = dict(f=f, up=up, down=down, padding=k // 2, groups=groups, flip_weight=flip_weight)
    expect = ref_conv2d_resample(x.double().numpy(), w.double().numpy(), f.double().numpy(), up, down,
                                 [k // 2] * 4, groups, flip_weight, False)
    y16 = conv2d_resample.conv2d_resample(x.half(), w.half(), **kwargs)
    assert y16.dtype == torch.float16
    np.testing.assert_allclose(y16.double().numpy(), expect, rtol=0, atol=5e-3 * np.abs(expect).max())
    xc = x.contiguous(memory_format=torch.channels_last)
    wc = w.contiguous(memory_format=torch.channels_last)
    yc = conv2d_resample.conv2d_resample(xc, wc, **kwargs)
    np.testing.assert_allclose(yc.numpy(), expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kwargs,match', [
    (dict(padding=[1, 2, 3]), 'padding'), (dict(down=2.0), 'down'), (dict(groups=0), 'groups'),
    (dict(f=torch.ones(2, 2, 2)), 'filter'),
])
def test_conv2d_resample_more_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv2d_resample.conv2d_resample(torch.zeros(1, 4, 8, 8), torch.zeros(2, 4, 3, 3), **kwargs)


# ---------------------------------------------------------------------------
# CUDA (skipped without a GPU): same results as the CPU, gradients of any order
# ---------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@cuda
def test_ops_on_cuda_match_cpu():
    dev = torch.device('cuda')
    f = upfirdn2d.setup_filter(FIR4, device=dev)
    x = rand(2, 8, 16, 16, seed=90)
    w = rand(6, 8, 3, 3, seed=91)
    for kwargs in [dict(up=2, padding=1, flip_weight=False), dict(down=2, padding=1), dict(padding=1)]:
        y = conv2d_resample.conv2d_resample(x.to(dev), w.to(dev), f=f, **kwargs).cpu()
        expect = conv2d_resample.conv2d_resample(x, w, f=f.cpu().double(), **kwargs)
        np.testing.assert_allclose(y.numpy(), expect.numpy(), rtol=1e-10, atol=1e-10)
    y = bias_act.bias_act(x.to(dev), rand(8, seed=92).to(dev), act='lrelu', clamp=1.0).cpu()
    np.testing.assert_allclose(y.numpy(), bias_act.bias_act(x, rand(8, seed=92), act='lrelu', clamp=1.0).numpy())
    x16 = x.to(dev, torch.float16)
    y16 = upfirdn2d.upsample2d(x16, f)
    assert y16.dtype == torch.float16
    np.testing.assert_allclose(y16.double().cpu().numpy(), upfirdn2d.upsample2d(x, f.cpu().double()).numpy(), atol=2e-2)


@cuda
def test_conv2d_resample_cuda_gradgradcheck():
    dev = torch.device('cuda')
    f = upfirdn2d.setup_filter(FIR4, device=dev).double()
    x = rand(1, 4, 5, 5, seed=93).to(dev).requires_grad_(True)
    w = rand(4, 2, 3, 3, seed=94).to(dev).requires_grad_(True)
    fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1, groups=2, flip_weight=False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))
