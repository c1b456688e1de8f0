"""Generator/Discriminator: upstream's names, shapes, parameter counts and init order; numerics of the
pieces against small references written here; behaviour (truncation, noise, conditioning, Freeze-D,
the fused-modconv rule); precision rules (fp16 blocks on CPU and with fp16_on_cpu); input checks;
first and second order gradients as R1 and path-length regularisation use them; the loss's phase
handling and discriminator hook. Parity with upstream's numbers: tests/test_parity.py."""

import math

import numpy as np
import pytest
from builders import tiny_discriminator, tiny_generator
import torch
import torch.nn.functional as F

from stylefreq.kwargs import registered_class
from training import loss as loss_module
from training import networks

# ---------------------------------------------------------------------------------------------
# Name/shape tables, written from the documented upstream layout (StyleGAN2-ADA's published layout).


def expected_generator_tensors(R, z_dim, w_dim, c_dim, img_channels, channel_base, channel_max,
                               map_layers, architecture='skip'):
    ch = lambda r: min(channel_base // r, channel_max)
    t = {}
    for r in [2 ** i for i in range(2, int(math.log2(R)) + 1)]:
        p = f'synthesis.b{r}.'
        t[p + 'resample_filter'] = [4, 4]
        if r == 4:
            t[p + 'const'] = [ch(4), 4, 4]
        else:
            t[p + 'conv0.weight'] = [ch(r), ch(r // 2), 3, 3]
            t[p + 'conv0.affine.weight'] = [ch(r // 2), w_dim]
            t[p + 'conv0.affine.bias'] = [ch(r // 2)]
            t[p + 'conv0.bias'] = [ch(r)]
            t[p + 'conv0.noise_strength'] = []
            t[p + 'conv0.noise_const'] = [r, r]
            t[p + 'conv0.resample_filter'] = [4, 4]
        t[p + 'conv1.weight'] = [ch(r), ch(r), 3, 3]
        t[p + 'conv1.affine.weight'] = [ch(r), w_dim]
        t[p + 'conv1.affine.bias'] = [ch(r)]
        t[p + 'conv1.bias'] = [ch(r)]
        t[p + 'conv1.noise_strength'] = []
        t[p + 'conv1.noise_const'] = [r, r]
        t[p + 'conv1.resample_filter'] = [4, 4]
        if architecture == 'skip' or r == R:
            t[p + 'torgb.weight'] = [img_channels, ch(r), 1, 1]
            t[p + 'torgb.bias'] = [img_channels]
            t[p + 'torgb.affine.weight'] = [ch(r), w_dim]
            t[p + 'torgb.affine.bias'] = [ch(r)]
        if architecture == 'resnet' and r > 4:
            t[p + 'skip.weight'] = [ch(r), ch(r // 2), 1, 1]
            t[p + 'skip.resample_filter'] = [4, 4]
    if c_dim > 0:
        t['mapping.embed.weight'] = [w_dim, c_dim]
        t['mapping.embed.bias'] = [w_dim]
    for i in range(map_layers):
        t[f'mapping.fc{i}.weight'] = [w_dim, (z_dim + (w_dim if c_dim else 0)) if i == 0 else w_dim]
        t[f'mapping.fc{i}.bias'] = [w_dim]
    t['mapping.w_avg'] = [w_dim]
    return t


def expected_discriminator_tensors(R, c_dim, img_channels, channel_base, channel_max, architecture='resnet',
                                   mbstd_channels=1):
    ch = lambda r: min(channel_base // r, channel_max)
    t = {}
    for r in [2 ** i for i in range(int(math.log2(R)), 2, -1)]:
        p = f'b{r}.'
        t[p + 'resample_filter'] = [4, 4]
        if r == R or architecture == 'skip':
            t[p + 'fromrgb.weight'] = [ch(r), img_channels, 1, 1]
            t[p + 'fromrgb.bias'] = [ch(r)]
            t[p + 'fromrgb.resample_filter'] = [4, 4]
        t[p + 'conv0.weight'] = [ch(r), ch(r), 3, 3]
        t[p + 'conv0.bias'] = [ch(r)]
        t[p + 'conv0.resample_filter'] = [4, 4]
        t[p + 'conv1.weight'] = [ch(r // 2), ch(r), 3, 3]
        t[p + 'conv1.bias'] = [ch(r // 2)]
        t[p + 'conv1.resample_filter'] = [4, 4]
        if architecture == 'resnet':
            t[p + 'skip.weight'] = [ch(r // 2), ch(r), 1, 1]
            t[p + 'skip.resample_filter'] = [4, 4]
    cmap = ch(4) if c_dim else 0
    if c_dim:
        t['mapping.embed.weight'] = [cmap, c_dim]
        t['mapping.embed.bias'] = [cmap]
        for i in range(8):
            t[f'mapping.fc{i}.weight'] = [cmap, cmap]
            t[f'mapping.fc{i}.bias'] = [cmap]
    if architecture == 'skip':
        t['b4.fromrgb.weight'] = [ch(4), img_channels, 1, 1]
        t['b4.fromrgb.bias'] = [ch(4)]
        t['b4.fromrgb.resample_filter'] = [4, 4]
    t['b4.conv.weight'] = [ch(4), ch(4) + mbstd_channels, 3, 3]
    t['b4.conv.bias'] = [ch(4)]
    t['b4.conv.resample_filter'] = [4, 4]
    t['b4.fc.weight'] = [ch(4), ch(4) * 16]
    t['b4.fc.bias'] = [ch(4)]
    t['b4.out.weight'] = [cmap or 1, ch(4)]
    t['b4.out.bias'] = [cmap or 1]
    return t


def tensor_table(module):
    return {n: list(t.shape) for n, t in list(module.named_parameters()) + list(module.named_buffers())}


@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('c_dim,img_channels', [(0, 3), (5, 1)])
def test_generator_tensor_names_and_shapes(architecture, c_dim, img_channels):
    G = networks.Generator(z_dim=24, c_dim=c_dim, w_dim=40, img_resolution=32, img_channels=img_channels,
                           mapping_kwargs=dict(num_layers=3),
                           synthesis_kwargs=dict(channel_base=512, channel_max=48, architecture=architecture))
    assert tensor_table(G) == expected_generator_tensors(32, 24, 40, c_dim, img_channels, 512, 48, 3, architecture)
    buffers = {n for n, _ in G.named_buffers()}
    assert buffers == {n for n in tensor_table(G) if n.endswith(('resample_filter', 'noise_const', 'w_avg'))}
    assert G.num_ws == 2 * 5 - 2 and G.synthesis.num_ws == G.mapping.num_ws == G.num_ws
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels) == (24, c_dim, 40, 32, img_channels)
    # Upstream registers synthesis before mapping: optimizer state and summaries follow that order.
    names = [n for n, _ in G.named_parameters()]
    assert names[0].startswith('synthesis.') and names[-1].startswith('mapping.')


@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('c_dim,img_channels', [(0, 3), (4, 1)])
def test_discriminator_tensor_names_and_shapes(architecture, c_dim, img_channels):
    D = networks.Discriminator(c_dim=c_dim, img_resolution=32, img_channels=img_channels, architecture=architecture,
                               channel_base=512, channel_max=48)
    assert tensor_table(D) == expected_discriminator_tensors(32, c_dim, img_channels, 512, 48, architecture)


@pytest.mark.parametrize('R,G_kwargs,D_kwargs,c_dim,G_count,D_count', [
    # Counts verified against upstream (StyleGAN2-ADA's published figures).
    (1024, dict(map=8, channel_base=32768), dict(channel_base=32768), 0, 30_370_060, 29_012_513),
    (256, dict(map=2, channel_base=16384), dict(channel_base=16384), 0, 23_191_522, 24_001_089),
    (32, dict(map=2, channel_base=32768), dict(channel_base=32768, architecture='orig'), 10, 20_215_315, 23_089_664),
])
def test_parameter_counts_match_upstream_presets(R, G_kwargs, D_kwargs, c_dim, G_count, D_count):
    G = networks.Generator(z_dim=512, c_dim=c_dim, w_dim=512, img_resolution=R, img_channels=3,
                           mapping_kwargs=dict(num_layers=G_kwargs['map']),
                           synthesis_kwargs=dict(channel_base=G_kwargs['channel_base'], channel_max=512,
                                                 num_fp16_res=4, conv_clamp=256))
    D = networks.Discriminator(c_dim=c_dim, img_resolution=R, img_channels=3, channel_max=512, num_fp16_res=4,
                               conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=4), **D_kwargs)
    assert sum(p.numel() for p in G.parameters()) == G_count
    assert sum(p.numel() for p in D.parameters()) == D_count
    # num_fp16_res=4: the four highest resolutions, never below 8.
    fp16_res = [r for r in (R // 8, R // 4, R // 2, R) if r >= 8]
    assert [r for r in G.synthesis.block_resolutions if getattr(G.synthesis, f'b{r}').use_fp16] == fp16_res
    assert [r for r in D.block_resolutions if getattr(D, f'b{r}').use_fp16] == fp16_res[::-1]


def test_num_ws_per_resolution():
    for R, num_ws in [(8, 4), (32, 8), (256, 14), (1024, 18)]:
        S = networks.SynthesisNetwork(w_dim=8, img_resolution=R, img_channels=3, channel_base=8192, channel_max=2)
        assert S.num_ws == num_ws


def test_freeze_layers_turn_weights_into_buffers():
    D = tiny_discriminator(res=32, block_kwargs=dict(freeze_layers=5))
    params = {n for n, _ in D.named_parameters()}
    buffers = {n for n, _ in D.named_buffers()}
    frozen = {'b32.fromrgb.weight', 'b32.fromrgb.bias', 'b32.conv0.weight', 'b32.conv0.bias', 'b32.conv1.weight',
              'b32.conv1.bias', 'b32.skip.weight', 'b16.conv0.weight', 'b16.conv0.bias'}
    assert frozen <= buffers and not (frozen & params)
    assert {'b16.conv1.weight', 'b4.conv.weight', 'b4.out.weight'} <= params
    # Same names and shapes as the unfrozen network, so checkpoints copy over by name.
    assert tensor_table(D) == tensor_table(tiny_discriminator(res=32))


def test_bad_resolution_and_architecture_are_rejected():
    with pytest.raises(ValueError, match='power of two'):
        networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=48, img_channels=3)
    with pytest.raises(ValueError, match='architecture'):
        tiny_generator(architecture='unet')
    with pytest.raises(ValueError, match='power of two'):
        networks.Discriminator(c_dim=0, img_resolution=100, img_channels=3)

# ---------------------------------------------------------------------------------------------
# Numerics of the pieces against references written from the equations.


def test_fully_connected_equalised_lr():
    torch.manual_seed(0)
    fc = networks.FullyConnectedLayer(6, 5, lr_multiplier=0.01, bias_init=0.3)
    with torch.no_grad():
        fc.bias.normal_()
    x = torch.randn(4, 6)
    ref = x @ (fc.weight * 0.01 / math.sqrt(6)).t() + fc.bias * 0.01
    assert torch.allclose(fc(x), ref, atol=1e-6)
    fc2 = networks.FullyConnectedLayer(6, 5, activation='lrelu')
    ref2 = F.leaky_relu(x @ (fc2.weight / math.sqrt(6)).t() + fc2.bias, 0.2) * math.sqrt(2)
    assert torch.allclose(fc2(x), ref2, atol=1e-6)


def test_mapping_normalises_embeds_truncates_and_tracks_w_avg():
    torch.manual_seed(1)
    M = networks.MappingNetwork(z_dim=8, c_dim=3, w_dim=8, num_ws=5, num_layers=2)
    z, c = torch.randn(4, 8), torch.randn(4, 3)

    def rms_norm(v):
        return v / torch.sqrt(v.square().mean(1, keepdim=True) + 1e-8)
    x = torch.cat([rms_norm(z), rms_norm(M.embed(c))], 1)
    for fc in (M.fc0, M.fc1):
        x = F.leaky_relu(x @ (fc.weight * 0.01 / math.sqrt(fc.weight.shape[1])).t() + fc.bias * 0.01, 0.2) * math.sqrt(2)
    M.eval()
    ws = M(z, c)
    assert ws.shape == (4, 5, 8)
    assert torch.allclose(ws, x[:, None].expand(4, 5, 8), atol=1e-5)

    with torch.no_grad():
        M.w_avg.normal_()
    wt = M(z, c, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(wt[:, :2], M.w_avg + 0.5 * (x[:, None] - M.w_avg), atol=1e-5)
    assert torch.allclose(wt[:, 2:], ws[:, 2:])

    M.train()
    before = M.w_avg.clone()
    M(z, c)
    assert torch.allclose(M.w_avg, x.mean(0) + 0.995 * (before - x.mean(0)), atol=1e-5)
    M(z, c, skip_w_avg_update=True)
    assert torch.allclose(M.w_avg, x.mean(0) + 0.995 * (before - x.mean(0)), atol=1e-5)

    with pytest.raises(ValueError, match='label'):
        M(z, None)


@pytest.mark.parametrize('demodulate', [True, False])
def test_modulated_conv_matches_per_sample_reference(demodulate):
    torch.manual_seed(2)
    x, weight, styles, noise = torch.randn(3, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(3, 4), torch.randn(3, 1, 6, 6)
    refs = []
    for n in range(3):
        w = weight * styles[n].reshape(1, 4, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        refs.append(F.conv2d(x[n:n + 1], w, padding=1) + noise[n:n + 1])
    ref = torch.cat(refs)
    for fused in (True, False):
        out = networks.modulated_conv2d(x, weight, styles, noise=noise, padding=1, demodulate=demodulate,
                                        fused_modconv=fused)
        assert torch.allclose(out, ref, atol=1e-5), fused


def test_modulated_conv_upsampling_fused_equals_unfused():
    torch.manual_seed(3)
    layer = networks.SynthesisLayer(4, 6, w_dim=8, resolution=16, up=2)
    x, w = torch.randn(2, 4, 8, 8), torch.randn(2, 8)
    a = layer(x, w, noise_mode='none', fused_modconv=True)
    b = layer(x, w, noise_mode='none', fused_modconv=False)
    assert a.shape == (2, 6, 16, 16)
    assert torch.allclose(a, b, atol=1e-5)


def test_minibatch_std_against_loop_reference():
    torch.manual_seed(4)
    x = torch.randn(8, 6, 4, 4)
    out = networks.MinibatchStdLayer(group_size=4, num_channels=2)(x)
    xn = x.numpy().astype(np.float64)
    # Sample i belongs to group i % (N / G); each group's std is averaged over its channel slice and pixels.
    n = 8 // 4
    for i in range(8):
        members = [j for j in range(8) if j % n == i % n]
        for f in range(2):
            sl = xn[members][:, f * 3:(f + 1) * 3]
            std = np.sqrt(sl.var(axis=0) + 1e-8).mean()
            assert np.allclose(out[i, 6 + f].numpy(), std, atol=1e-5)
    assert torch.equal(out[:, :6], x)
    with pytest.raises(ValueError, match='divisible'):
        networks.MinibatchStdLayer(group_size=4)(torch.randn(6, 2, 4, 4))


def test_conditional_discriminator_projects_onto_mapped_label():
    torch.manual_seed(5)
    D = tiny_discriminator(c_dim=3)
    img, c = torch.randn(4, 3, 16, 16), torch.randn(4, 3)
    feats = {}
    D.b4.out.register_forward_hook(lambda m, i, o: feats.setdefault('out', o))
    logits = D(img, c)
    cmap = D.mapping(None, c)
    assert logits.shape == (4, 1)
    assert torch.allclose(logits, (feats['out'] * cmap).sum(1, keepdim=True) / math.sqrt(cmap.shape[1]), atol=1e-5)


def test_torgb_is_modulated_without_demodulation():
    torch.manual_seed(6)
    layer = networks.ToRGBLayer(4, 3, w_dim=8)
    with torch.no_grad():
        layer.bias.normal_()
    x, w = torch.randn(2, 4, 5, 5), torch.randn(2, 8)
    styles = layer.affine(w) / math.sqrt(4)
    ref = torch.einsum('oi,ni,nihw->nohw', layer.weight[:, :, 0, 0], styles, x) + layer.bias.reshape(1, 3, 1, 1)
    assert torch.allclose(layer(x, w), ref, atol=1e-5)

# ---------------------------------------------------------------------------------------------
# Behaviour of the whole networks.


@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_generator_forward_modes(architecture):
    torch.manual_seed(7)
    G = tiny_generator(architecture=architecture).eval()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)   # noise_strength starts at 0: make noise matter
    z = torch.randn(2, 32)
    img = G(z, None, noise_mode='const')
    assert img.shape == (2, 3, 16, 16) and img.dtype == torch.float32 and torch.isfinite(img).all()
    assert torch.equal(img, G(z, None, noise_mode='const'))
    assert not torch.allclose(img, G(z, None, noise_mode='none'))
    torch.manual_seed(1); r1 = G(z, None, noise_mode='random')
    torch.manual_seed(1); r2 = G(z, None, noise_mode='random')
    torch.manual_seed(2); r3 = G(z, None, noise_mode='random')
    assert torch.equal(r1, r2) and not torch.allclose(r1, r3)
    # fused and unfused modulated convolutions compute the same function
    assert torch.allclose(G(z, None, noise_mode='const', fused_modconv=False), img, atol=1e-5)
    with pytest.raises(ValueError, match='noise_mode'):
        G(z, None, noise_mode='sometimes')


def test_fp16_flags_run_in_float32_on_cpu():
    torch.manual_seed(8)
    kw = dict(num_fp16_res=2, conv_clamp=256)
    G = tiny_generator(**kw).eval()
    G32 = tiny_generator().eval()
    G32.load_state_dict(G.state_dict())
    z = torch.randn(2, 32)
    assert G.synthesis.b16.use_fp16 and G.synthesis.b8.use_fp16 and not G.synthesis.b4.use_fp16
    # conv_clamp=256 never binds for these activations, so the outputs agree exactly.
    assert torch.allclose(G(z, None, noise_mode='const'), G32(z, None, noise_mode='const'), atol=1e-6)
    D = tiny_discriminator(num_fp16_res=2, conv_clamp=256)
    assert D(torch.randn(4, 3, 16, 16), None).dtype == torch.float32


def test_conv_clamp_limits_activations():
    torch.manual_seed(9)
    layer = networks.SynthesisLayer(4, 4, w_dim=8, resolution=8, conv_clamp=0.05)
    out = layer(torch.randn(2, 4, 8, 8) * 10, torch.randn(2, 8), noise_mode='none', gain=2)
    assert out.abs().max() <= 0.1 + 1e-6 and out.abs().max() > 0.09


def test_conditional_generator_needs_label():
    G = tiny_generator(c_dim=4)
    with pytest.raises(ValueError, match='label'):
        G(torch.randn(2, 32), None)
    assert G(torch.randn(2, 32), torch.eye(4)[:2]).shape == (2, 3, 16, 16)


def test_discriminator_r1_double_backward():
    torch.manual_seed(10)
    D = tiny_discriminator()
    img = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = D(img, None)
    (grad,) = torch.autograd.grad(logits.sum(), img, create_graph=True)
    penalty = grad.square().sum()
    penalty.backward()
    grads = {n: p.grad for n, p in D.named_parameters()}
    # The output bias does not change d(logits)/d(img), so it alone receives no R1 gradient.
    assert grads.pop('b4.out.bias') is None
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(grads[n].abs().sum() > 0 for n in grads if n.endswith('.weight'))


def test_generator_path_length_double_backward():
    torch.manual_seed(11)
    G = tiny_generator().train()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ws = G.mapping(torch.randn(2, 32), None)
    img = G.synthesis(ws, noise_mode='const')
    (grad,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    grad.square().sum(2).mean(1).sqrt().mean().backward()
    weight_grads = [p.grad for n, p in G.synthesis.named_parameters() if n.endswith('conv1.weight')]
    assert all(g is not None and g.abs().sum() > 0 for g in weight_grads)


def test_persistent_classes_record_constructor_arguments():
    G = tiny_generator(c_dim=2)
    assert G._init_kwargs['c_dim'] == 2
    assert G._init_kwargs['synthesis_kwargs']['channel_base'] == 256
    assert G.synthesis._init_kwargs['img_resolution'] == 16


PERSISTENT = ['FullyConnectedLayer', 'Conv2dLayer', 'MappingNetwork', 'SynthesisLayer', 'ToRGBLayer', 'SynthesisBlock',
              'SynthesisNetwork', 'Generator', 'DiscriminatorBlock', 'MinibatchStdLayer', 'DiscriminatorEpilogue',
              'Discriminator']


@pytest.mark.parametrize('name', PERSISTENT)
def test_checkpointed_classes_are_registered(name):
    assert registered_class(f'training.networks.{name}') is getattr(networks, name)


def test_init_draws_follow_upstream_creation_order():
    """Same seed, same initial weights as upstream: randn draws in module creation order (spec section 4)."""
    torch.manual_seed(3)
    G = tiny_generator(res=8)
    torch.manual_seed(3)
    S = G.synthesis
    expected = [S.b4.const, S.b4.conv1.affine.weight, S.b4.conv1.weight, S.b4.conv1.noise_const,
                S.b4.torgb.affine.weight, S.b4.torgb.weight,
                S.b8.conv0.affine.weight, S.b8.conv0.weight, S.b8.conv0.noise_const,
                S.b8.conv1.affine.weight, S.b8.conv1.weight, S.b8.conv1.noise_const,
                S.b8.torgb.affine.weight, S.b8.torgb.weight]
    for t in expected:
        assert torch.equal(t, torch.randn(t.shape))
    for fc in (G.mapping.fc0, G.mapping.fc1):       # mapping after synthesis; stored N(0,1)/lr_multiplier
        assert torch.equal(fc.weight, torch.randn(fc.weight.shape) / 0.01)
    assert torch.equal(S.b4.conv1.affine.bias, torch.ones_like(S.b4.conv1.affine.bias))

    torch.manual_seed(4)
    D = tiny_discriminator(res=8, c_dim=2)
    torch.manual_seed(4)
    for t in [D.b8.fromrgb.weight, D.b8.conv0.weight, D.b8.conv1.weight, D.b8.skip.weight, D.mapping.embed.weight]:
        assert torch.equal(t, torch.randn(t.shape))
    for i in range(8):
        w = getattr(D.mapping, f'fc{i}').weight
        assert torch.equal(w, torch.randn(w.shape) / 0.01)
    for t in [D.b4.conv.weight, D.b4.fc.weight, D.b4.out.weight]:
        assert torch.equal(t, torch.randn(t.shape))

# ---------------------------------------------------------------------------------------------
# Input checks at the public boundaries: one sentence, no traceback from inside a layer.


def test_bad_input_shapes_are_rejected():
    G, D = tiny_generator(c_dim=3), tiny_discriminator(c_dim=3)
    z, c = torch.randn(2, 32), torch.randn(2, 3)
    cases = [
        (lambda: G(torch.randn(2, 31), c), 'latent z'),
        (lambda: G(torch.randn(2, 32, 1), c), 'latent z'),
        (lambda: G(z, torch.randn(2, 4)), 'label c'),
        (lambda: G(z, torch.randn(3, 3)), 'label c'),
        (lambda: G.mapping(z, None), 'label'),
        (lambda: G.synthesis(torch.randn(2, G.num_ws - 1, 32)), 'ws must have shape'),
        (lambda: G.synthesis(torch.randn(2, G.num_ws)), 'ws must have shape'),
        (lambda: D(torch.randn(2, 3, 8, 8), c), 'images must have shape'),
        (lambda: D(torch.randn(2, 1, 16, 16), c), 'images must have shape'),
        (lambda: D(torch.randn(2, 3, 16, 16), None), 'labels must have shape'),
        (lambda: D(torch.randn(2, 3, 16, 16), torch.randn(4, 3)), 'labels must have shape'),
        (lambda: D.mapping(None, c, truncation_psi=0.5), 'w_avg'),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert '\n' not in str(info.value)

# ---------------------------------------------------------------------------------------------
# Precision rules.


def _record_output_dtypes(net, kinds=(networks.SynthesisLayer, networks.ToRGBLayer, networks.Conv2dLayer)):
    seen = {}
    for name, module in net.named_modules():
        if isinstance(module, kinds):
            module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.dtype))
    return seen


@pytest.mark.parametrize('mode', ['train', 'eval', 'eval_fused'])
@pytest.mark.parametrize('architecture', ['skip', 'resnet'])
def test_fp16_blocks_stay_float16_with_fp16_on_cpu(mode, architecture):
    torch.manual_seed(12)
    G = tiny_generator(architecture=architecture, num_fp16_res=2, conv_clamp=256).train(mode == 'train')
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)    # non-zero noise strengths: the noise add is exercised
    seen = _record_output_dtypes(G.synthesis)
    fused = True if mode == 'eval_fused' else None
    for noise_mode in ('const', 'random'):
        seen.clear()
        img = G(torch.randn(2, 32), None, noise_mode=noise_mode, fp16_on_cpu=True, fused_modconv=fused)
        assert img.dtype == torch.float32 and torch.isfinite(img).all()
        assert seen and all(name.startswith(('b4.', 'b8.', 'b16.')) for name in seen)
        for name, dtype in seen.items():
            assert dtype == (torch.float32 if name.startswith('b4.') else torch.float16), (name, dtype)
    # force_fp32 wins over fp16_on_cpu, and without the flag the CPU computes in float32.
    for kwargs in (dict(fp16_on_cpu=True, force_fp32=True), {}):
        seen.clear()
        G(torch.randn(2, 32), None, **kwargs)
        assert set(seen.values()) == {torch.float32}


def test_fp16_discriminator_blocks_with_fp16_on_cpu():
    torch.manual_seed(13)
    D = tiny_discriminator(architecture='skip', num_fp16_res=2, conv_clamp=256)
    seen = _record_output_dtypes(D)
    img = torch.randn(4, 3, 16, 16)
    logits = D(img, None, fp16_on_cpu=True)
    assert logits.dtype == torch.float32
    for name, dtype in seen.items():
        assert dtype == (torch.float16 if name.startswith(('b16.', 'b8.')) else torch.float32), (name, dtype)
    # float16 computation is close to the float32 one (same weights, rounding only).
    ref = D(img, None)
    assert (logits - ref).abs().max() <= 2e-2 * ref.abs().max()


def test_fused_noise_add_keeps_float16():
    x = torch.randn(2, 4, 6, 6).half()
    noise = torch.randn(2, 1, 6, 6)             # noise is float32 in every mode
    out = networks.modulated_conv2d(x, torch.randn(5, 4, 3, 3), torch.randn(2, 4), noise=noise, padding=1,
                                    fused_modconv=True)
    assert out.dtype == torch.float16


def test_fp16_modulated_conv_matches_float32():
    torch.manual_seed(14)
    x, weight, styles, noise = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3), torch.randn(2, 4) * 3, torch.randn(2, 1, 6, 6)
    ref = networks.modulated_conv2d(x, weight, styles, noise=noise, padding=1)
    for fused in (True, False):
        out = networks.modulated_conv2d(x.half(), weight, styles, noise=noise, padding=1, fused_modconv=fused)
        assert out.dtype == torch.float16
        assert (out.float() - ref).abs().max() <= 5e-3 * ref.abs().max()


def test_fused_modconv_default_rule(monkeypatch):
    """Training: batched (unfused); eval: fused for float32 blocks or a batch of one."""
    calls = []
    real = networks.modulated_conv2d
    monkeypatch.setattr(networks, 'modulated_conv2d',
                        lambda x, *a, **k: (calls.append((x.dtype, k['fused_modconv'])), real(x, *a, **k))[1])
    G = tiny_generator(num_fp16_res=2)
    z = torch.randn(2, 32)

    def fused_flags(**kwargs):
        calls.clear()
        G(**dict(dict(z=z, c=None), **kwargs))
        return calls
    G.train()
    assert {f for _, f in fused_flags()} == {False}
    G.eval()
    assert {f for _, f in fused_flags()} == {True}                         # CPU: float32 everywhere
    flags = fused_flags(fp16_on_cpu=True)
    assert {f for d, f in flags if d == torch.float16} == {False}        # float16 blocks, batch 2
    assert {f for d, f in flags if d == torch.float32} == {True}
    assert {f for _, f in fused_flags(z=z[:1], fp16_on_cpu=True)} == {True}
    assert {f for _, f in fused_flags(fused_modconv=False)} == {False}   # an explicit value wins


def test_channels_last_fp16_matches_contiguous():
    torch.manual_seed(15)
    G = tiny_generator(num_fp16_res=2, fp16_channels_last=True).eval()
    G_plain = tiny_generator(num_fp16_res=2).eval()
    G_plain.load_state_dict(G.state_dict())
    assert G.synthesis.b16.channels_last and not G.synthesis.b4.channels_last
    z = torch.randn(2, 32)
    a = G(z, None, noise_mode='const', fp16_on_cpu=True)
    b = G_plain(z, None, noise_mode='const', fp16_on_cpu=True)
    assert (a - b).abs().max() <= 1e-2 * b.abs().max()

# ---------------------------------------------------------------------------------------------
# Gradients.


def test_fused_modulated_conv_double_backward():
    """Eval-mode (fused) synthesis, noise added in place: first and second order gradients flow."""
    torch.manual_seed(16)
    G = tiny_generator().eval()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ws = G.mapping(torch.randn(2, 32), None).requires_grad_(True)
    img = G.synthesis(ws, noise_mode='const', fused_modconv=True)
    (grad,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws, create_graph=True)
    grad.square().sum().backward()
    # Everything that shapes d(img)/d(ws) gets a gradient (the ToRGB biases only shift the image).
    for name, p in G.synthesis.named_parameters():
        if not name.endswith('torgb.bias'):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name

# ---------------------------------------------------------------------------------------------
# training/loss.py: phases, the discriminator hook, statistics (numbers: tests/test_parity.py).


class _RecordingAugment(torch.nn.Module):
    """Flips images left-right and remembers what it returned."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def forward(self, img):
        out = img.flip(3) * 0.5
        self.outputs.append(out)
        return out


class _HookedD(torch.nn.Module):
    def __init__(self, D):
        super().__init__()
        self.inner = D
        self.scored = []
        self.aux_calls = []
        self.aux_scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, img, c):
        self.scored.append(img)
        return self.inner(img, c)

    def aux_loss(self, img, c, real):
        self.aux_calls.append((img, real))
        return self.aux_scale * img.detach().mean(dim=[1, 2, 3]) * (1 if real else -1)


def _loss_setup(**kwargs):
    torch.manual_seed(17)
    G, D = tiny_generator().train().requires_grad_(False), _HookedD(tiny_discriminator()).train().requires_grad_(False)
    pipe = _RecordingAugment()
    loss = loss_module.StyleGAN2Loss(torch.device('cpu'), G.mapping, G.synthesis, D, augment_pipe=pipe, **kwargs)
    data = dict(real_img=torch.randn(4, 3, 16, 16), real_c=torch.zeros(4, 0), gen_z=torch.randn(4, 32),
                gen_c=torch.zeros(4, 0))
    return G, D, pipe, loss, data


def test_loss_rejects_unknown_phase():
    _, _, _, loss, data = _loss_setup()
    with pytest.raises(ValueError, match="unknown loss phase 'Dboth2'"):
        loss.accumulate_gradients(phase='Dboth2', gain=1, **data)


def test_aux_loss_hook_sees_exactly_the_scored_images(monkeypatch):
    G, D, pipe, loss, data = _loss_setup()
    reported = {}
    monkeypatch.setattr(loss_module.training_stats, 'report', lambda name, value: reported.setdefault(name, value))
    D.requires_grad_(True)
    loss.accumulate_gradients(phase='Dmain', gain=1, **data)
    assert len(D.scored) == 2 and len(D.aux_calls) == 2
    assert all(scored is augmented for scored, augmented in zip(D.scored, pipe.outputs))
    assert {'Loss/D/aux_fake', 'Loss/D/aux_real', 'Loss/D/loss'} <= set(reported)
    assert D.aux_calls[0][0] is D.scored[0] and D.aux_calls[0][1] is False      # fakes first
    assert D.aux_calls[1][0] is D.scored[1] and D.aux_calls[1][1] is True
    # The hook's loss is part of the backward: its parameter receives mean(real) - mean(fake).
    expected = D.scored[1].mean() - D.scored[0].detach().mean()
    assert torch.allclose(D.aux_scale.grad, expected, atol=1e-6)
    # Neither the generator phase nor the R1 phase asks for it.
    D.aux_calls.clear()
    loss.accumulate_gradients(phase='Dreg', gain=16, **data)
    D.requires_grad_(False)
    G.requires_grad_(True)
    loss.accumulate_gradients(phase='Gmain', gain=1, **data)
    assert D.aux_calls == []


def test_sync_has_no_effect_and_both_phases_sum_main_and_reg():
    grads = []
    for phase_list, sync in ((['Dmain', 'Dreg'], True), (['Dboth'], False)):
        G, D, _, loss, data = _loss_setup(r1_gamma=3.0)
        D.requires_grad_(True)
        torch.manual_seed(5)
        for phase in phase_list:
            loss.accumulate_gradients(phase=phase, gain=1, sync=sync, **data)
        grads.append({n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7)


def test_path_length_updates_pl_mean_from_the_mean_length():
    G, D, _, loss, data = _loss_setup(style_mixing_prob=0)
    G.requires_grad_(True)
    torch.manual_seed(6)
    loss.accumulate_gradients(phase='Greg', gain=4, **data)
    # Independent recomputation: same seed, same draws (noise per layer, then the direction).
    torch.manual_seed(6)
    ws = G.mapping(data['gen_z'][:2], None)
    img = G.synthesis(ws)
    direction = torch.randn_like(img) / 16
    (g,) = torch.autograd.grad((img * direction).sum(), ws)
    lengths = g.square().sum(2).mean(1).sqrt()
    assert torch.allclose(loss.pl_mean, 0.01 * lengths.mean(), rtol=1e-5)
