"""Generator/Discriminator: upstream's names, shapes and parameter counts; numerics of the pieces
against small references written here; behaviour (truncation, noise, conditioning, Freeze-D, fp16
flags on CPU); first and second order gradients as R1 and path-length regularisation use them."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import networks

# ---------------------------------------------------------------------------------------------
# Name/shape tables, written from the documented upstream layout (research/upstream.md section 2).


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


def tiny_G(R=16, c_dim=0, img_channels=3, architecture='skip', **kw):
    return networks.Generator(z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=R, img_channels=img_channels,
                              mapping_kwargs=dict(num_layers=2),
                              synthesis_kwargs=dict(channel_base=256, channel_max=32, architecture=architecture, **kw))


def tiny_D(R=16, c_dim=0, img_channels=3, architecture='resnet', **kw):
    return networks.Discriminator(c_dim=c_dim, img_resolution=R, img_channels=img_channels, architecture=architecture,
                                  channel_base=256, channel_max=32, **kw)


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
    # Counts verified against upstream (research/upstream.md section 2).
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


def test_num_ws_per_resolution():
    for R, num_ws in [(8, 4), (32, 8), (256, 14), (1024, 18)]:
        S = networks.SynthesisNetwork(w_dim=8, img_resolution=R, img_channels=3, channel_base=8192, channel_max=2)
        assert S.num_ws == num_ws


def test_freeze_layers_turn_weights_into_buffers():
    D = tiny_D(R=32, block_kwargs=dict(freeze_layers=5))
    params = {n for n, _ in D.named_parameters()}
    buffers = {n for n, _ in D.named_buffers()}
    frozen = {'b32.fromrgb.weight', 'b32.fromrgb.bias', 'b32.conv0.weight', 'b32.conv0.bias', 'b32.conv1.weight',
              'b32.conv1.bias', 'b32.skip.weight', 'b16.conv0.weight', 'b16.conv0.bias'}
    assert frozen <= buffers and not (frozen & params)
    assert {'b16.conv1.weight', 'b4.conv.weight', 'b4.out.weight'} <= params
    # Same names and shapes as the unfrozen network, so checkpoints copy over by name.
    assert tensor_table(D) == tensor_table(tiny_D(R=32))


def test_bad_resolution_and_architecture_are_rejected():
    with pytest.raises(ValueError, match='power of two'):
        networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=48, img_channels=3)
    with pytest.raises(ValueError, match='architecture'):
        tiny_G(architecture='unet')
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
    D = tiny_D(c_dim=3)
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
    G = tiny_G(architecture=architecture).eval()
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
    G = tiny_G(**kw).eval()
    G32 = tiny_G().eval()
    G32.load_state_dict(G.state_dict())
    z = torch.randn(2, 32)
    assert G.synthesis.b16.use_fp16 and G.synthesis.b8.use_fp16 and not G.synthesis.b4.use_fp16
    # conv_clamp=256 never binds for these activations, so the outputs agree exactly.
    assert torch.allclose(G(z, None, noise_mode='const'), G32(z, None, noise_mode='const'), atol=1e-6)
    D = tiny_D(num_fp16_res=2, conv_clamp=256)
    assert D(torch.randn(4, 3, 16, 16), None).dtype == torch.float32


def test_conv_clamp_limits_activations():
    torch.manual_seed(9)
    layer = networks.SynthesisLayer(4, 4, w_dim=8, resolution=8, conv_clamp=0.05)
    out = layer(torch.randn(2, 4, 8, 8) * 10, torch.randn(2, 8), noise_mode='none', gain=2)
    assert out.abs().max() <= 0.1 + 1e-6 and out.abs().max() > 0.09


def test_conditional_generator_needs_label():
    G = tiny_G(c_dim=4)
    with pytest.raises(ValueError, match='label'):
        G(torch.randn(2, 32), None)
    assert G(torch.randn(2, 32), torch.eye(4)[:2]).shape == (2, 3, 16, 16)


def test_discriminator_r1_double_backward():
    torch.manual_seed(10)
    D = tiny_D()
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
    G = tiny_G().train()
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
    G = tiny_G(c_dim=2)
    assert G._init_kwargs['c_dim'] == 2
    assert G._init_kwargs['synthesis_kwargs']['channel_base'] == 256
    assert G.synthesis._init_kwargs['img_resolution'] == 16
