"""Frequency-shifted synthesis (stylefreq.freqshift), --freq-shift, and the per-carrier distance.

Tiny networks throughout (channel_base 256, channel_max 32, 16 px, z/w 32) so the file runs in
well under a minute and a half on two busy CPU cores.
"""

import copy
import json
import math
import os

import numpy as np
import pytest
import torch

import builders
from stylefreq import carriers, checkpoint, features
from stylefreq.carriers import carrier_cos_sin, frequency_shift
from stylefreq.freqshift import FrequencyShiftedGenerator
from stylefreq.ops import upfirdn2d
from training import config, networks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Z = 32
MAPPING = dict(num_layers=1)
SYNTHESIS = dict(channel_base=256, channel_max=32)
BASE_KWARGS = dict(class_name='training.networks.Generator', z_dim=Z, w_dim=Z, mapping_kwargs=MAPPING,
                   synthesis_kwargs=SYNTHESIS)


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    # Tiny networks gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    # spinning threads make every small op 10-30x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise_noise(G):
    """Non-zero noise strengths (they start at 0), so 'random' noise actually changes the image."""
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(0.3)
    return G


def plain_G(seed=0, res=16, channels=3, c_dim=0, **synthesis):
    synthesis = dict(SYNTHESIS, **synthesis)
    return _randomise_noise(builders.tiny_generator(res=res, c_dim=c_dim, channels=channels, z_dim=Z, map_layers=1,
                                                    seed=seed, cbase=synthesis.pop('channel_base'),
                                                    cmax=synthesis.pop('channel_max'), **synthesis))


def fs_G(mode='fsg', carriers=None, seed=0, res=16, channels=3, c_dim=0, base_kwargs=BASE_KWARGS, **options):
    torch.manual_seed(seed)
    return _randomise_noise(FrequencyShiftedGenerator(c_dim=c_dim, img_resolution=res, img_channels=channels,
                                                      base_kwargs=base_kwargs, mode=mode, carriers=carriers,
                                                      **options))


def latents(n=3, seed=123, c_dim=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn([n, Z], generator=g)
    c = torch.zeros([n, c_dim])
    if c_dim:
        c[torch.arange(n), torch.arange(n) % c_dim] = 1
    return z, c


def run_both(G1, G2, z, c, seed=7, **kwargs):
    torch.manual_seed(seed)
    a = G1(z, c, **kwargs)
    torch.manual_seed(seed)
    b = G2(z, c, **kwargs)
    return a, b


# ---------------------------------------------------------------------------------------------
# The shift itself.


def _band_limited(rng, shape, radius):
    """Real [..., H, W] float64 images whose spectrum is zero outside |fx|, |fy| <= radius bins."""
    H, W = shape[-2:]
    spec = np.zeros(shape, dtype=np.complex128)
    fy = np.fft.fftfreq(H) * H
    fx = np.fft.fftfreq(W) * W
    mask = (np.abs(fy)[:, None] <= radius) & (np.abs(fx)[None, :] <= radius)
    spec[..., mask] = rng.standard_normal(spec[..., mask].shape) + 1j * rng.standard_normal(spec[..., mask].shape)
    return np.fft.ifft2(spec).real        # real part = Hermitian-symmetrised band, still within the band


@pytest.mark.parametrize('carrier', [(4, 0), (0, 4), (4, 4), (-4, 4), (5, -3), (16, 16), (16, 0), (0, 0)])
def test_shift_moves_band_limited_spectrum_to_plus_minus_carrier(carrier):
    R = 32
    u, v = carrier[0] / R, carrier[1] / R
    rng = np.random.default_rng(0)
    g_r = _band_limited(rng, (2, 3, R, R), radius=2)
    g_i = _band_limited(rng, (2, 3, R, R), radius=2)
    out = frequency_shift(torch.from_numpy(g_r), torch.from_numpy(g_i), u, v).numpy()

    # Direct definition: Re{(g_r + i g_i) e^{i theta}}, theta = 2 pi (u x + v y), x = column.
    y, x = np.meshgrid(np.arange(R), np.arange(R), indexing='ij')
    theta = 2 * np.pi * (u * x + v * y)
    np.testing.assert_allclose(out, np.real((g_r + 1j * g_i) * np.exp(1j * theta)), atol=1e-12)

    # Spectrum: FS = 1/2 [G(f - f_k) + G*(-f - f_k)], i.e. the band moved exactly to +-f_k.
    G = np.fft.fft2(g_r + 1j * g_i)
    F = np.fft.fft2(out)
    k = np.arange(R)
    shifted = G[..., ((k - carrier[1]) % R)[:, None], ((k - carrier[0]) % R)[None, :]]      # G(f - f_k)
    mirrored = np.conj(G[..., ((-k - carrier[1]) % R)[:, None], ((-k - carrier[0]) % R)[None, :]])  # G*(-f - f_k)
    np.testing.assert_allclose(F, 0.5 * (shifted + mirrored), atol=1e-9)
    # Energy only within the radius-2 bands around +f_k and -f_k.
    fy = (np.fft.fftfreq(R) * R)[:, None]
    fx = (np.fft.fftfreq(R) * R)[None, :]

    def near(cx, cy):
        dy = (fy - cy + R / 2) % R - R / 2
        dx = (fx - cx + R / 2) % R - R / 2
        return (np.abs(dx) <= 2) & (np.abs(dy) <= 2)

    outside = ~(near(*carrier) | near(-carrier[0], -carrier[1]))
    assert np.abs(F[..., outside]).max() < 1e-9


def test_shift_broadcasts_and_keeps_dtype():
    g = torch.randn(4, 3, 8, 8)
    out = frequency_shift(g, None, 1 / 8, 0)
    cos, _ = carrier_cos_sin(1 / 8, 0, 8, 8)
    assert out.dtype == torch.float32 and out.shape == g.shape
    assert torch.equal(out, g * cos)
    with pytest.raises(ValueError, match='differ in shape'):
        frequency_shift(g, g[:, :1], 0.1, 0)


@pytest.mark.parametrize('carrier', [(0.5, 0.5), (0.5, 0), (0, 0.5), (0, 0), (-0.5, 0.5)])
def test_real_carriers_are_exact(carrier):
    assert carriers.carrier_is_real(*carrier)
    cos, sin = carrier_cos_sin(*carrier, 16, 16)
    assert torch.equal(sin, torch.zeros(16, 16))
    assert set(cos.unique().tolist()) <= {-1.0, 1.0}
    y, x = np.meshgrid(np.arange(16), np.arange(16), indexing='ij')
    np.testing.assert_array_equal(cos.numpy(), np.rint(np.cos(2 * np.pi * (carrier[0] * x + carrier[1] * y))))
    assert not carriers.carrier_is_real(1 / 16, 0.5)


def test_learned_carrier_phase_matches_fixed():
    u = torch.tensor(3 / 16)
    v = torch.tensor(-1 / 16)
    a = carriers.carrier_phase(u, v, 16, 16)
    b = carriers.carrier_phase(3 / 16, -1 / 16, 16, 16)
    assert torch.allclose(torch.cos(a), torch.cos(b), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Branches, names, zero-gain start.


@pytest.mark.parametrize('mode,carriers,parts', [
    ('out', None, []),
    ('fsg', None, [(k, p) for k in range(4) for p in ('real', 'imag')]),
    ('noshift', None, [(k, p) for k in range(4) for p in ('real', 'imag')]),
    ('learn', None, [(k, p) for k in range(4) for p in ('real', 'imag')]),
    ('fsg', [[0.5, 0.5], [1 / 16, 0]], [(0, 'real'), (1, 'real'), (1, 'imag')]),
    ('fsg', [[0.5, 0], [0, 0], [0, -0.5]], [(0, 'real'), (1, 'real'), (2, 'real')]),
    ('noshift', [[0.5, 0.5]], [(0, 'real')]),
    ('learn', [[0.5, 0.5]], [(0, 'real'), (0, 'imag')]),    # a learned carrier leaves the sin == 0 set
])
def test_branch_count_and_names(mode, carriers, parts):
    """`parts` lists the branches in order as (carrier, real|imag)."""
    G = fs_G(mode, carriers)
    P = plain_G()
    names = {n for n, _ in list(G.named_parameters()) + list(G.named_buffers())}
    plain_names = {n for n, _ in list(P.named_parameters()) + list(P.named_buffers())}
    assert plain_names <= names                        # base tensors keep their exact upstream names
    extra = names - plain_names
    expected_pairs = []
    for j, (k, part) in enumerate(parts):
        if part == 'real':
            expected_pairs.append((k, j, None))
        else:
            assert expected_pairs[-1][0] == k
            expected_pairs[-1] = (k, expected_pairs[-1][1], j)
    assert G.synthesis.pairs == expected_pairs
    if mode == 'out':
        assert extra == set()
        return
    assert {n.split('.')[2] for n in extra if n.startswith('synthesis.fsg.')} == {str(j) for j in range(len(parts))}
    assert 'synthesis.fsg_gain' in extra and G.synthesis.fsg_gain.shape == (len(parts),)
    assert torch.equal(G.synthesis.fsg_gain, torch.zeros(len(parts)))
    assert ('synthesis.fsg_carriers' in extra) == (mode == 'learn')
    assert all(n.startswith('synthesis.fsg') for n in extra)
    # One synthesis block at R/2 per branch: ch(R/4) -> ch(R/2), skip ToRGB, fed with the last block's ws.
    branch = G.synthesis.fsg[0]
    assert branch.resolution == 8 and branch.is_last and branch.architecture == 'skip'
    assert branch.conv0.weight.shape[:2] == G.synthesis.b8.conv1.weight.shape[:1] + G.synthesis.b4.conv1.weight.shape[:1]
    assert len(G.synthesis.branch_names()) == len(parts)


@pytest.mark.parametrize('mode', ['fsg', 'noshift', 'learn'])
def test_output_is_the_base_image_plus_shifted_branches(mode):
    """The whole generator against the method's formula written out here: the base generator's
    image plus, per carrier k with gains a, b on its real/imaginary branch images Y_r, Y_i (each
    FIR-upsampled 2x), a Y_r cos(theta_k) - b Y_i sin(theta_k), theta_k = 2 pi (u x + v y) with x
    the column and y the row; 'noshift' adds a Y_r + b Y_i. Real carriers (u, v multiples of 1/2)
    have no imaginary branch unless learned."""
    carriers = [[1 / 16, 0.0], [0.5, 0.5], [-3 / 16, 5 / 16]]
    G = fs_G(mode, carriers, res=32).eval()
    branches = G.synthesis.fsg
    with torch.no_grad():
        G.synthesis.fsg_gain.copy_(torch.linspace(0.6, 1.4, len(branches)))
        if mode == 'learn':            # move the learned carriers off their initial values
            G.synthesis.fsg_carriers.add_(torch.tensor([[0.01, -0.02], [0.0, 0.03], [-0.01, 0.01]])
                                          / G.synthesis.carrier_lr_mult)
    # Which branches belong to which carrier, from the rule above (not from the module).
    layout, j = [], 0
    for u, v in carriers:
        complex_carrier = mode == 'learn' or not (float(2 * u).is_integer() and float(2 * v).is_integer())
        layout.append((j, j + 1 if complex_carrier else None))
        j += 2 if complex_carrier else 1
    assert len(branches) == j
    used = (G.synthesis.fsg_carriers * G.synthesis.carrier_lr_mult).tolist() if mode == 'learn' else carriers

    z, c = latents(2)
    base = plain_G(res=32)
    base.load_state_dict({k: v for k, v in G.state_dict().items() if not k.startswith('synthesis.fsg')})
    captured = {}
    hooks = [b.register_forward_hook(lambda m, inp, out, j=j: captured.__setitem__(j, out[1]))
             for j, b in enumerate(branches)]
    with torch.no_grad():
        ws = G.mapping(z, c)
        got = G.synthesis(ws, noise_mode='const').double().numpy()
        want = base_image = base.synthesis(ws, noise_mode='const').double().numpy()
        up = {j: upfirdn2d.upsample2d(y.float(), branches[j].resample_filter).double().numpy()
              for j, y in captured.items()}
    for h in hooks:
        h.remove()
    gain = G.synthesis.fsg_gain.detach().double().numpy()
    y_idx, x_idx = np.mgrid[0:32, 0:32].astype(np.float64)
    for (u, v), (jr, ji) in zip(used, layout):
        theta = 2 * np.pi * (u * x_idx + v * y_idx)
        real = gain[jr] * up[jr]
        imag = 0.0 if ji is None else gain[ji] * up[ji]
        if mode == 'noshift':
            want = want + real + imag
        else:
            want = want + real * np.cos(theta) - imag * np.sin(theta)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert np.abs(got - base_image).max() > 1e-2          # the branches contribute


def test_branches_use_last_block_ws_and_fir_upsample():
    G = fs_G('noshift', [[0.5, 0.5]]).eval()
    with torch.no_grad():
        G.synthesis.fsg_gain.fill_(1)
    z, c = latents()
    ws = G.mapping(z, c)
    ws[:, :-3] = 0                       # only the last block's 3 ws should reach the branch
    base = copy.deepcopy(G)
    with torch.no_grad():
        base.synthesis.fsg_gain.zero_()
        x = img = None
        for res in (4, 8, 16):
            block_ws = G.synthesis.split_ws(ws)[[4, 8, 16].index(res)]
            x, img = getattr(G.synthesis, f'b{res}')(x, img, block_ws, noise_mode='const')
            if res == 4:
                feat = x
        _, y = G.synthesis.fsg[0](feat, None, ws[:, G.num_ws - 3:], noise_mode='const')
        from stylefreq.ops import upfirdn2d
        expected = img + upfirdn2d.upsample2d(y, G.synthesis.fsg[0].resample_filter)
        assert torch.equal(G.synthesis(ws, noise_mode='const'), expected)
        assert torch.equal(base.synthesis(ws, noise_mode='const'), img)


@pytest.mark.parametrize('mode', ['fsg', 'noshift', 'learn', 'out'])
def test_zero_gain_start_reproduces_base_bit_for_bit(mode):
    G = fs_G(mode, seed=5)
    P = plain_G(seed=5)                                 # same seed: the base is built first, same weights
    z, c = latents()
    for kwargs in [dict(noise_mode='const'), dict(noise_mode='random'), dict(noise_mode='none'),
                   dict(truncation_psi=0.5, noise_mode='const'), dict(fused_modconv=False)]:
        a, b = run_both(G, P, z, c, **kwargs)
        if mode == 'out':
            b = b * carrier_cos_sin(0.5, 0.5, 16, 16)[0]
        assert torch.equal(a, b), (mode, kwargs)


@pytest.mark.parametrize('mode', ['fsg', 'learn'])
def test_plain_checkpoint_loads_through_copy_weights(mode, tmp_path):
    from training.resume import copy_weights
    P = plain_G(seed=11)
    with torch.no_grad():                # make every tensor distinct from an init
        for t in P.synthesis.parameters():
            t.add_(0.01 * torch.randn_like(t))
    path = tmp_path / 'plain.pkl'
    checkpoint.save_network_pkl(path, dict(G=P, G_ema=P, D=None))
    src = checkpoint.load_network_pkl(str(path), verbose=False)['G_ema']
    G = fs_G(mode, seed=99)
    missing = copy_weights(src, G, 'G')
    assert missing and all(n.startswith('synthesis.fsg') for n in missing)
    for name, t in list(P.named_parameters()) + list(P.named_buffers()):
        assert torch.equal(G.get_parameter(name) if name in dict(G.named_parameters()) else G.get_buffer(name), t)
    z, c = latents()
    for noise_mode in ('const', 'random'):
        a, b = run_both(G, P, z, c, noise_mode=noise_mode)
        assert torch.equal(a, b)


def test_gradients_flow_to_gains_then_branches():
    G = fs_G('fsg', [[1 / 16, 1 / 16]]).train()
    z, c = latents()
    G.requires_grad_(True)
    G(z, c).square().mean().backward()
    assert G.synthesis.fsg_gain.grad.abs().min() > 0          # the zero gains get a gradient at once
    assert G.synthesis.fsg[0].conv0.weight.grad.abs().max() == 0   # the branch waits for a non-zero gain
    G.zero_grad()
    with torch.no_grad():
        G.synthesis.fsg_gain.fill_(0.1)
    G(z, c).square().mean().backward()
    assert G.synthesis.fsg[0].conv0.weight.grad.abs().max() > 0
    assert G.synthesis.b4.const.grad.abs().max() > 0


def test_learnable_carriers_get_gradients_and_move():
    G = fs_G('learn').train()
    with torch.no_grad():
        G.synthesis.fsg_gain.fill_(1)
    assert torch.allclose(G.synthesis.carrier_values(), torch.tensor(carriers.FSG16_CARRIERS, dtype=torch.float32))
    G.requires_grad_(True)
    z, c = latents()
    G(z, c).square().mean().backward()
    grad = G.synthesis.fsg_carriers.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().min() > 0
    before = G.synthesis.carrier_values()
    torch.optim.Adam([G.synthesis.fsg_carriers], lr=0.0025).step()
    step = (G.synthesis.carrier_values() - before).abs()
    assert 0 < step.max() <= 0.0025 * G.synthesis.carrier_lr_mult * 1.01    # carrier_lr_mult slows it down


def test_checkpoint_roundtrip_identical_outputs(tmp_path):
    for mode in ('fsg', 'learn', 'out'):
        G = fs_G(mode, carriers=None if mode != 'fsg' else [[1 / 16, 0], [0.5, 0.5]], c_dim=2)
        if mode != 'out':
            with torch.no_grad():
                G.synthesis.fsg_gain.uniform_(-1, 1)
                if mode == 'learn':
                    G.synthesis.fsg_carriers.add_(0.3)
        path = tmp_path / f'{mode}.pkl'
        checkpoint.save_network_pkl(path, dict(G=G, G_ema=G, D=None))
        G2 = checkpoint.load_network_pkl(str(path), verbose=False)['G_ema']
        assert type(G2) is FrequencyShiftedGenerator and G2.synthesis.pairs == G.synthesis.pairs
        z, c = latents(c_dim=2)
        a, b = run_both(G.eval(), G2, z, c, noise_mode='random', truncation_psi=0.7)
        assert torch.equal(a, b)


def test_force_fp16_reaches_the_base_synthesis(tmp_path):
    G = fs_G('fsg', [[1 / 16, 0]])
    checkpoint.save_network_pkl(tmp_path / 'g.pkl', dict(G=G, G_ema=G, D=None))
    G16 = checkpoint.load_network_pkl(str(tmp_path / 'g.pkl'), force_fp16=True, verbose=False)['G_ema']
    assert G16.synthesis.b16.use_fp16 and G16.synthesis.b16.conv1.conv_clamp == 256
    assert G16.synthesis.fsg[0].use_fp16 and G16.synthesis.fsg[0].conv1.conv_clamp == 256
    z, c = latents()
    a, b = run_both(G.eval(), G16, z, c, noise_mode='const')      # fp16 flags compute in float32 on CPU
    assert torch.allclose(a, b, atol=1e-5)


def test_generator_attributes_truncation_and_noise_modes():
    G = fs_G('fsg', c_dim=3).eval()
    P = plain_G(c_dim=3)
    for attr in ('z_dim', 'c_dim', 'w_dim', 'num_ws', 'img_resolution', 'img_channels'):
        assert getattr(G, attr) == getattr(P, attr)
    assert G.synthesis.num_ws == G.num_ws == G.mapping.num_ws
    assert G.synthesis.block_resolutions == [4, 8, 16]
    with torch.no_grad():
        G.synthesis.fsg_gain.fill_(0.5)
        G.mapping.w_avg.normal_()
        z, c = latents(c_dim=3)
        ws = G.mapping(z, c, truncation_psi=0.5)
        assert torch.allclose(ws, G.mapping.w_avg.lerp(G.mapping(z, c), 0.5))
        assert torch.equal(G(z, c, truncation_psi=0.5, noise_mode='const'), G.synthesis(ws, noise_mode='const'))
        assert torch.equal(G(z, c, noise_mode='const'), G(z, c, noise_mode='const'))
        assert not torch.equal(G(z, c, noise_mode='random'), G(z, c, noise_mode='random'))
        assert G(z, c, noise_mode='none').shape == (3, 3, 16, 16)
        with pytest.raises(ValueError, match='synthesis ws'):
            G.synthesis(ws[:, 1:])
    # EMA-style deep copy and the loss's separate mapping/synthesis calls.
    G_ema = copy.deepcopy(G)
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        assert p_ema.shape == p.shape
    from training.loss import StyleGAN2Loss
    loss = StyleGAN2Loss(device=torch.device('cpu'), G_mapping=G.mapping, G_synthesis=G.synthesis, D=None)
    img, ws = loss.run_G(z, c)
    assert img.shape == (3, 3, 16, 16) and ws.shape == (3, G.num_ws, Z)


# ---------------------------------------------------------------------------------------------
# A foreign, upstream-shaped generator (not stylefreq's Generator/SynthesisNetwork classes).


class ForeignMapping(torch.nn.Module):
    def __init__(self, z_dim, w_dim, num_ws):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, 0, w_dim, num_ws
        self.fc = torch.nn.Linear(z_dim, w_dim)
        self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        w = torch.nn.functional.leaky_relu(self.fc(z), 0.2).unsqueeze(1).repeat([1, self.num_ws, 1])
        return self.w_avg.lerp(w, truncation_psi) if truncation_psi != 1 else w


class ForeignSynthesis(torch.nn.Module):
    """Blocks b4..bR like upstream's, with its own inline ws split (no split_ws method)."""

    def __init__(self, w_dim, img_resolution, img_channels, channels=16):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        log2 = int(math.log2(img_resolution))
        self.block_resolutions = [1 << k for k in range(2, log2 + 1)]
        blocks = [networks.SynthesisBlock(channels if r > 4 else 0, channels, w_dim=w_dim, resolution=r,
                                          img_channels=img_channels, is_last=(r == img_resolution))
                  for r in self.block_resolutions]
        for r, b in zip(self.block_resolutions, blocks):
            self.add_module(f'b{r}', b)
        self.num_ws = sum(b.num_conv for b in blocks) + blocks[-1].num_torgb

    def forward(self, ws, **block_kwargs):
        starts = np.cumsum([0] + [getattr(self, f'b{r}').num_conv for r in self.block_resolutions])
        feat = image = None
        for r, start in zip(self.block_resolutions, starts):
            blk = self.get_submodule(f'b{r}')
            feat, image = blk(feat, image, ws[:, start:start + blk.num_conv + blk.num_torgb], **block_kwargs)
        return image


class ForeignGenerator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = ForeignSynthesis(w_dim, img_resolution, img_channels)
        self.num_ws = self.synthesis.num_ws
        self.mapping = ForeignMapping(z_dim, w_dim, self.num_ws)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), **synthesis_kwargs)


FOREIGN = dict(class_name=f'{__name__}.ForeignGenerator', z_dim=Z, w_dim=Z)


@pytest.mark.parametrize('mode', ['fsg', 'out', 'learn'])
def test_wraps_a_foreign_upstream_shaped_generator(mode):
    G = fs_G(mode, base_kwargs=FOREIGN, seed=3, res=32)
    torch.manual_seed(3)
    F = _randomise_noise(ForeignGenerator(z_dim=Z, c_dim=0, w_dim=Z, img_resolution=32, img_channels=3))
    assert {n for n, _ in F.named_parameters()} <= {n for n, _ in G.named_parameters()}
    assert G.num_ws == F.num_ws and isinstance(G.mapping, ForeignMapping)
    z, c = latents()
    a, b = run_both(G, F, z, c, noise_mode='random', truncation_psi=0.8)
    if mode == 'out':
        b = b * carrier_cos_sin(0.5, 0.5, 32, 32)[0]
    assert torch.equal(a, b)
    if mode != 'out':
        assert type(G.synthesis.fsg[0]) is networks.SynthesisBlock and G.synthesis.fsg[0].resolution == 16
        with torch.no_grad():
            G.synthesis.fsg_gain.fill_(1)
        assert not torch.equal(G(z, c, noise_mode='const'), F(z, c, noise_mode='const'))


def test_wrapper_errors_are_clear():
    with pytest.raises(ValueError, match='mode must be one of'):
        fs_G('shift')
    with pytest.raises(ValueError, match=r'outside \[-1/2, 1/2\]'):
        fs_G('fsg', [[0.75, 0]])
    with pytest.raises(ValueError, match='same carrier'):
        fs_G('fsg', [[1 / 16, 1 / 16], [-1 / 16, -1 / 16]])
    with pytest.raises(ValueError, match="mode 'out' multiplies the image by one carrier"):
        fs_G('out', [[0.5, 0.5], [0.5, 0]])
    with pytest.raises(ValueError, match='img_resolution >= 16'):
        fs_G('fsg', res=8)
    assert fs_G('out', res=8).img_resolution == 8
    with pytest.raises(ValueError, match='class_name'):
        fs_G('fsg', base_kwargs=dict(z_dim=Z, w_dim=Z))
    with pytest.raises(ValueError, match='no .mapping network'):
        fs_G('fsg', base_kwargs=dict(class_name='torch.nn.Identity'))


# ---------------------------------------------------------------------------------------------
# --freq-shift values and train.py.


def test_parse_freq_shift_values():
    assert features.parse_freq_shift(None) is None and features.parse_freq_shift('none') is None
    assert features.parse_freq_shift('fsg16') == dict(mode='fsg', carriers=[list(c) for c in carriers.FSG16_CARRIERS])
    assert features.parse_freq_shift('out') == dict(mode='out', carriers=[[0.5, 0.5]])
    assert features.parse_freq_shift('noshift16')['mode'] == 'noshift'
    assert features.parse_freq_shift('learn16')['mode'] == 'learn'
    assert features.parse_freq_shift('1/16,0;0,1/16') == dict(mode='fsg', carriers=[[0.0625, 0.0], [0.0, 0.0625]])
    assert features.parse_freq_shift(' (0.5, -0.5) ; (-1/8,.25) ')['carriers'] == [[0.5, -0.5], [-0.125, 0.25]]
    assert features.freq_shift_desc('fsg16') == 'fsg16' and features.freq_shift_desc('1/16,0') == 'fsgcustom'
    for bad, match in [('fsg8', 'neither none'), ('1/16', 'is not a carrier u,v'), ('1/16,0,0', 'is not a carrier'),
                       ('0.6,0', 'outside'), ('1/0,0', 'divides by zero'), ('a,b', 'is not a carrier'),
                       ('nan,0', 'is not a carrier'), ('1/2,0;-1/2,0', 'same carrier')]:
        with pytest.raises(ValueError, match=match):
            features.parse_freq_shift(bad)


def _train_args(tmp_path, **flags):
    desc, args = config.training_options(data='builtin:blobs16', cbase=256, cmax=32, map=1, batch=4,
                                                  kimg=1, aug='noaug', workers=0, snap=1, **flags)
    return desc, args


@pytest.mark.parametrize('value,message', [
    ('fsg32', "--freq-shift: 'fsg32' is neither none"),
    ('1/16;0', "--freq-shift: '1/16' is not a carrier u,v"),
    ('3/4,0', r'--freq-shift: carrier \(3/4, 0\) lies outside \[-1/2, 1/2\] cycles per pixel'),
    ('-0.51,0', r'--freq-shift: carrier \(-0.51, 0\) lies outside'),
])
def test_train_rejects_bad_freq_shift(value, message, tmp_path):
    with pytest.raises(config.UserError, match=message):
        _train_args(tmp_path, freq_shift=value)


def test_train_freq_shift_resolution_check():
    with pytest.raises(config.UserError, match='--freq-shift=fsg16 needs a resolution of at least 16'):
        config.training_options(data='builtin:blobs8', cbase=256, cmax=32, freq_shift='fsg16')
    desc, _ = config.training_options(data='builtin:blobs8', cbase=256, cmax=32, freq_shift='out')
    assert desc.endswith('-out-dnoaa')


def test_train_cli_error_is_one_sentence(tmp_path):
    import train
    from click.testing import CliRunner
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', '--data=builtin:blobs16', '--freq-shift=2,2',
                                             '--dry-run'])
    assert result.exit_code == 2
    assert 'Error: --freq-shift: carrier (2, 2) lies outside [-1/2, 1/2] cycles per pixel' in result.output
    assert 'Traceback' not in result.output


def test_train_desc_and_kwargs(tmp_path):
    desc, args = _train_args(tmp_path, freq_shift='fsg16')
    assert desc.endswith('-fsg16')
    assert args.G_kwargs.class_name == 'stylefreq.freqshift.FrequencyShiftedGenerator'
    assert args.G_kwargs.base_kwargs.class_name == 'training.networks.Generator'
    assert args.G_kwargs.base_kwargs.synthesis_kwargs.channel_base == 256
    json.dumps(args)                                             # training_options.json must serialise
    assert _train_args(tmp_path, freq_shift='1/16,0;0,1/16')[0].endswith('-fsgcustom')
    desc, args = _train_args(tmp_path, freq_shift='none')
    assert args.G_kwargs.class_name == 'training.networks.Generator' and 'fsg' not in desc


def _short_run(tmp_path, monkeypatch, name, **flags):
    """train.py's kwargs for the flags, shrunk to one iteration (all four phases) of a tiny network."""
    from training import training_loop
    _, args = _train_args(tmp_path, **flags)
    base = args.G_kwargs.base_kwargs if 'base_kwargs' in args.G_kwargs else args.G_kwargs
    base.z_dim = base.w_dim = Z
    args.total_kimg = 0.004                                      # one iteration of 4 images: done at tick 0
    args.image_snapshot_ticks = None
    args.run_dir = str(tmp_path / name)
    os.makedirs(args.run_dir)
    # The loop's 32x32 image grid at 16 px would dominate the run time; 8 images show the same.
    grid = training_loop.setup_snapshot_image_grid
    monkeypatch.setattr(training_loop, 'setup_snapshot_image_grid',
                        lambda training_set: (lambda size, imgs, labels: ((4, 2), imgs[:8], labels[:8]))(
                            *grid(training_set)))
    training_loop.training_loop(**args)
    return os.path.join(args.run_dir, 'network-snapshot-000000.pkl')


def _cfg_values():
    return ['auto'] + (['ssd'] if 'ssd' in config.PRESETS else [])


@pytest.mark.parametrize('freq_shift', ['out', 'fsg16', 'noshift16', 'learn16', '1/4,0;0,1/2'])
def test_short_training_run_per_variant(freq_shift, tmp_path, monkeypatch):
    snapshot = _short_run(tmp_path, monkeypatch, 'run', freq_shift=freq_shift)
    data = checkpoint.load_network_pkl(snapshot, verbose=False)
    G, G_ema = data['G'], data['G_ema']
    assert type(G_ema) is FrequencyShiftedGenerator
    spec = features.parse_freq_shift(freq_shift)
    assert G_ema.synthesis.mode == spec['mode']
    assert all(torch.isfinite(p).all() for p in G.parameters())
    if spec['mode'] != 'out':
        assert G.synthesis.fsg_gain.abs().min() > 0               # every gain left zero in the first step
    assert data['progress']['cur_nimg'] == 4


@pytest.mark.parametrize('cfg', _cfg_values())
def test_short_training_run_composes_with_cfg_and_generate(cfg, tmp_path, monkeypatch):
    import generate
    from click.testing import CliRunner
    snapshot = _short_run(tmp_path, monkeypatch, f'run-{cfg}', freq_shift='fsg16', cfg=cfg)
    out = tmp_path / 'gen'
    result = CliRunner().invoke(generate.main, [f'--network={snapshot}', '--seeds=0-1', f'--outdir={out}',
                                                '--trunc=0.7'])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ['seed0000.png', 'seed0001.png']


# ---------------------------------------------------------------------------------------------
# Per-carrier distance (the authors' toy evaluation).


def test_carrier_distance_hand_computed_cases():
    from metrics import carrier_distance as cd
    rng = np.random.default_rng(0)
    # Samples at bin centres, so a shift by whole bins moves every sample by exactly that many bins.
    idx = rng.integers(10, 100, size=5000)
    mags = (idx + 0.5) / 128
    assert cd.histogram_distances(mags, mags, cd.MAGNITUDE_RANGE) == dict(w1=0.0, tv=0.0)
    d = cd.histogram_distances(mags, mags + 3 / 128, cd.MAGNITUDE_RANGE)
    assert d['w1'] == pytest.approx(3 / 128, abs=1e-12)
    phases = -math.pi + (idx + 0.5) * (2 * math.pi / 128)
    d = cd.histogram_distances(phases, phases + 5 * 2 * math.pi / 128, cd.PHASE_RANGE)
    assert d['w1'] == pytest.approx(5 * 2 * math.pi / 128, abs=1e-9)
    # All mass in the first bin vs the last one: W1 = 127 bins, TV = 1; half overlap: TV = 1/2.
    d = cd.histogram_distances([0.001] * 10, [0.999] * 10, cd.MAGNITUDE_RANGE)
    assert d['w1'] == pytest.approx(127 / 128) and d['tv'] == pytest.approx(1.0)
    d = cd.histogram_distances([0.001, 0.5], [0.001, 0.999], cd.MAGNITUDE_RANGE)
    assert d['tv'] == pytest.approx(0.5)
    # Out-of-range samples land in the edge bins instead of vanishing.
    d = cd.histogram_distances([0.999] * 4, [1.7] * 4, cd.MAGNITUDE_RANGE)
    assert d == dict(w1=0.0, tv=0.0)
    per_carrier = cd.carrier_distances(mags[:, None], phases[:, None], mags[:, None], phases[:, None], freqs=[(3, 3)])
    assert per_carrier == [dict(freq=[3, 3], magnitude=dict(w1=0.0, tv=0.0), phase=dict(w1=0.0, tv=0.0))]


def test_cosine_distances_on_cosine_data():
    from metrics import carrier_distance as cd
    from training import synthetic
    spec = synthetic.CosineSpec(resolution=16, freqs=((1, 1),))
    m, p = synthetic.sample_cosine_params(spec, 400, seed=0)
    real = synthetic.to_uint8(synthetic.render_cosines(spec, m, p))
    d = cd.cosine_distances(real, real[:, None], spec)[0]
    assert d['magnitude'] == dict(w1=0.0, tv=0.0) and d['phase'] == dict(w1=0.0, tv=0.0)
    fake = synthetic.to_uint8(synthetic.render_cosines(spec, np.clip(m + 0.2, 0, 1), p))
    d = cd.cosine_distances(real, fake, spec)[0]
    assert d['magnitude']['w1'] == pytest.approx(0.2, abs=0.02) and d['phase']['w1'] < 0.05
