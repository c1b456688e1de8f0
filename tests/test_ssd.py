"""stylefreq.ssd: the spectral classifier, the discriminator wrapper's modes, gradients, R1,
checkpoints, weight transfer from a plain D, train.py's flags and short training runs."""

import copy
import glob
import json
import os
import pathlib

import pytest
import torch
import torch.nn.functional as F

import builders

REPO = pathlib.Path(__file__).resolve().parents[1]

import train
from stylefreq import checkpoint, distributed, spectral
from stylefreq.kwargs import construct_class_by_name
from stylefreq import kwargs as sf_kwargs
from stylefreq.persistence import persistent_class
from stylefreq.ssd import SpectralClassifier, SSDDiscriminator
from training import config, launch, loss as loss_module, resume
from training import networks, training_loop

TINY_D = dict(class_name='training.networks.Discriminator', channel_base=256, channel_max=16)


@persistent_class
class TinyForeignD(torch.nn.Module):
    """A discriminator that is not stylefreq's, known to the wrapper only by its class_name."""

    def __init__(self, c_dim, img_resolution, img_channels, width=4):
        super().__init__()
        self.conv = torch.nn.Conv2d(img_channels, width, 3, padding=1)
        self.fc = torch.nn.Linear(width, 1)
        self.embed = torch.nn.Linear(c_dim, width) if c_dim else None

    def forward(self, img, c, **unused):
        h = F.leaky_relu(self.conv(img), 0.2).mean(dim=(2, 3))
        out = self.fc(h)
        if self.embed is not None:
            out = out + (self.embed(c) * h).sum(dim=1, keepdim=True)
        return out


FOREIGN_D = dict(class_name=f'{TinyForeignD.__module__}.TinyForeignD', width=5)


def make_ssd(spatial=TINY_D, c_dim=0, res=16, channels=3, **kwargs):
    torch.manual_seed(0)
    return construct_class_by_name(class_name='stylefreq.ssd.SSDDiscriminator', spatial_kwargs=dict(spatial),
                                   c_dim=c_dim, img_resolution=res, img_channels=channels, **kwargs)


def images(n=4, res=16, channels=3, seed=1, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand([n, channels, res, res], generator=g) * 2 - 1).requires_grad_(requires_grad)


def input_grad(fn, x):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x).sum(), [x])
    return g


# ---------------------------------------------------------------------------------------------
# SpectralClassifier


def test_classifier_is_exact_spectral_norm_of_one_row():
    torch.manual_seed(0)
    C = SpectralClassifier(20)
    phi = torch.rand(5, 20)
    w = C.weight / C.weight.norm()
    torch.testing.assert_close(C(phi), phi @ w.t() + C.bias)
    # torch's own spectral_norm (one power iteration, as SSD-GAN's SNLinear) gives the same logits.
    lin = torch.nn.Linear(20, 1)
    with torch.no_grad():
        lin.weight.copy_(C.weight)
        lin.bias.copy_(C.bias)
    sn = torch.nn.utils.parametrizations.spectral_norm(lin).train()
    torch.testing.assert_close(sn(phi), C(phi), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.linalg.matrix_norm(C.normalized_weight(), ord=2), torch.tensor(1.0))
    assert sum(p.numel() for p in C.parameters()) == 21 and not list(C.buffers())
    with pytest.raises(ValueError, match=r'\[N, 20\]'):
        C(torch.rand(5, 19))


# ---------------------------------------------------------------------------------------------
# The wrapper around stylefreq's D and around a foreign D


@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
@pytest.mark.parametrize('c_dim', [0, 3])
def test_wrapper_around_stylefreq_d(architecture, c_dim):
    x = images()
    c = torch.eye(3)[torch.tensor([0, 1, 2, 0])] if c_dim else torch.zeros(4, 0)
    for mode in ('official', 'joint'):
        D = make_ssd(dict(TINY_D, architecture=architecture), c_dim=c_dim, mode=mode, ssd_lambda=0.3)
        assert D.inner_prefixes == ('spatial.',) and isinstance(D.spatial, networks.Discriminator)
        assert D.spatial.c_dim == c_dim and D.classifier.in_features == spectral.ssd_feature_size(16)
        out = D(x, c)
        assert out.shape == (4, 1) and out.dtype == torch.float32
        expected = 0.3 * D.spatial(x, c) + 0.7 * D.classifier(spectral.ssd_feature(x))
        torch.testing.assert_close(out, expected)
    if c_dim:   # the spatial D stays conditional; C ignores c
        assert not torch.allclose(D(x, c), D(x, torch.eye(3)[torch.tensor([1, 2, 0, 1])]))
        torch.testing.assert_close(D.spectral_logits(x), D.classifier(spectral.ssd_feature(x)))


def test_wrapper_around_foreign_d():
    x, c = images(), torch.eye(2)[torch.tensor([0, 1, 1, 0])]
    D = make_ssd(FOREIGN_D, c_dim=2, mode='official')
    assert isinstance(D.spatial, TinyForeignD) and D.spatial.conv.out_channels == 5
    torch.testing.assert_close(D(x, c), 0.5 * D.spatial(x, c) + 0.5 * D.spectral_logits(x))


def test_wrapper_checks_its_arguments():
    with pytest.raises(ValueError, match='mode'):
        make_ssd(mode='stopgrad')
    with pytest.raises(ValueError, match='ssd_lambda'):
        make_ssd(ssd_lambda=0)
    with pytest.raises(ValueError, match='1 or 3 image channels'):
        make_ssd(channels=2)
    with pytest.raises(ValueError, match='class_name'):
        make_ssd(spatial=dict(channel_base=256))


# ---------------------------------------------------------------------------------------------
# Modes: where gradients go


def test_official_mode_gradients():
    D = make_ssd(mode='official', ssd_lambda=0.4).requires_grad_(True)
    x, c = images(), torch.zeros(4, 0)
    # No gradient reaches the input (hence G) through C: d logit / dx = lambda * dD / dx.
    torch.testing.assert_close(input_grad(lambda v: D(v, c), x), 0.4 * input_grad(lambda v: D.spatial(v, c), x))
    # C's parameters get no gradient from the main logit ...
    D(x, c).sum().backward()
    assert D.classifier.weight.grad is None and D.classifier.bias.grad is None
    assert all(p.grad is not None for p in D.spatial.parameters())
    # ... only from its own hinge loss, which touches nothing else.
    D.zero_grad(set_to_none=True)
    s_c = D.spectral_logits(x)[:, 0].detach()
    real, fake = D.aux_loss(x, c, real=True), D.aux_loss(x, c, real=False)
    torch.testing.assert_close(real, torch.relu(1 - s_c))
    torch.testing.assert_close(fake, torch.relu(1 + s_c))
    xr = x.clone().requires_grad_(True)
    (real.sum() + D.aux_loss(xr, c, real=False).sum()).backward()
    assert D.classifier.weight.grad is not None and D.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in D.spatial.parameters()) and xr.grad is None


def test_joint_mode_gradients():
    D = make_ssd(mode='joint', ssd_lambda=0.4).requires_grad_(True)
    x, c = images(), torch.zeros(4, 0)
    grad = input_grad(lambda v: D(v, c), x)
    grad_spatial = input_grad(lambda v: D.spatial(v, c), x)
    grad_spectral = input_grad(lambda v: D.spectral_logits(v), x)
    assert grad_spectral.abs().sum() > 0
    torch.testing.assert_close(grad, 0.4 * grad_spatial + 0.6 * grad_spectral)
    assert D.aux_loss(x, c, real=True) is None
    D(x, c).sum().backward()
    assert D.classifier.weight.grad is not None and D.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('mode', ['official', 'joint'])
def test_r1_through_the_stock_loss(mode):
    """R1 is taken of the wrapper's logit: lambda^2 * gamma on the spatial D in official mode."""
    lam, gamma = 0.4, 3.0
    D = make_ssd(mode=mode, ssd_lambda=lam)
    plain = copy.deepcopy(D.spatial)
    x, c = images(), torch.zeros(4, 0)

    def r1_grads(net, r1_gamma):
        net.requires_grad_(True).zero_grad(set_to_none=True)
        lossobj = loss_module.StyleGAN2Loss(torch.device('cpu'), None, None, net, r1_gamma=r1_gamma)
        lossobj.accumulate_gradients('Dreg', x, c, None, None, gain=1)
        net.requires_grad_(False)
        return {n: p.grad for n, p in net.named_parameters()}

    got = r1_grads(D, gamma)
    ref = r1_grads(plain, lam ** 2 * gamma)
    if mode == 'official':
        for name, g in ref.items():
            torch.testing.assert_close(got['spatial.' + name], g, rtol=1e-4, atol=1e-7)
        assert got['classifier.weight'] is None
    else:
        # C's path is part of the input gradient, so R1 also trains C (double backward through the FFT).
        assert got['classifier.weight'] is not None and got['classifier.weight'].abs().sum() > 0
        diff = max((got['spatial.' + n] - g).abs().max().item() for n, g in ref.items())
        assert diff > 1e-6


def test_loss_phases_with_generator():
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    D = make_ssd(mode='official')
    lossobj = loss_module.StyleGAN2Loss(torch.device('cpu'), G.mapping, G.synthesis, D, r1_gamma=1, pl_weight=0)
    x, c, z = images(), torch.zeros(4, 0), torch.randn(4, 8)
    D.requires_grad_(True)
    lossobj.accumulate_gradients('Dmain', x, c, z, c, gain=1)
    assert D.classifier.weight.grad is not None          # C trained in the D phase via aux_loss
    D.requires_grad_(False).zero_grad(set_to_none=True)
    G.requires_grad_(True)
    lossobj.accumulate_gradients('Gmain', x, c, z, c, gain=1)
    assert D.classifier.weight.grad is None and all(p.grad is not None for p in G.synthesis.parameters()
                                                    if p.requires_grad and p.ndim > 1)


# ---------------------------------------------------------------------------------------------
# Checkpoints and weight transfer


def _roundtrip(D, path):
    checkpoint.save_network_pkl(path, dict(D=D, G=None, G_ema=None, training_set_kwargs={}))
    return checkpoint.load_network_pkl(path, verbose=False)['D']


@pytest.mark.parametrize('mode', ['official', 'joint'])
def test_checkpoint_roundtrip(tmp_path, mode):
    D = make_ssd(dict(TINY_D, architecture='skip'), c_dim=3, mode=mode, ssd_lambda=0.25).eval()
    with torch.no_grad():
        D.classifier.weight.mul_(3).add_(0.1)      # not its init: the file must carry C
    D2 = _roundtrip(D, str(tmp_path / f'{mode}.pkl'))
    assert type(D2) is SSDDiscriminator and D2.mode == mode and D2.ssd_lambda == 0.25
    x, c = images(), torch.eye(3)[torch.tensor([0, 1, 2, 0])]
    assert torch.equal(D2(x, c), D(x, c))
    assert torch.equal(D2.classifier.weight, D.classifier.weight)


def test_checkpoint_force_fp16_reaches_the_spatial_d(tmp_path):
    D = make_ssd()
    path = str(tmp_path / 'd.pkl')
    checkpoint.save_network_pkl(path, dict(D=D, G=None, G_ema=None))
    D16 = checkpoint.load_network_pkl(path, force_fp16=True, verbose=False)['D']
    assert type(D16) is SSDDiscriminator and D16.spatial.b16.use_fp16 and not D.spatial.b16.use_fp16
    x = images()
    torch.testing.assert_close(D16(x, None, force_fp32=True), D(x, None))


def test_checkpoint_roundtrip_foreign_d(tmp_path, monkeypatch):
    monkeypatch.setattr(sf_kwargs, '_ALLOWED_MODULES', set(sf_kwargs._ALLOWED_MODULES))
    D = make_ssd(FOREIGN_D, c_dim=2).eval()
    path = str(tmp_path / 'foreign.pkl')
    checkpoint.save_network_pkl(path, dict(D=D, G=None, G_ema=None))
    # The spatial D's module is not one that files may name until the user allows it.
    with pytest.raises(checkpoint.CheckpointError, match='allow_module'):
        checkpoint.load_network_pkl(path, verbose=False)
    sf_kwargs.allow_module(TinyForeignD.__module__)
    D2 = checkpoint.load_network_pkl(path, verbose=False)['D']
    assert isinstance(D2.spatial, TinyForeignD)
    x, c = images(), torch.eye(2)[torch.tensor([0, 1, 1, 0])]
    assert torch.equal(D2(x, c), D(x, c))


def test_plain_d_weights_load_into_wrapper():
    torch.manual_seed(5)
    plain = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=16)
    D = make_ssd(mode='official')
    c_init = copy.deepcopy(D.classifier.state_dict())
    missing = resume.copy_weights(plain, D, 'D')
    assert sorted(missing) == ['classifier.bias', 'classifier.weight']
    wrapped = D.state_dict()
    for name, t in plain.state_dict().items():
        assert torch.equal(wrapped['spatial.' + name], t), name
    for name, t in D.classifier.state_dict().items():
        assert torch.equal(t, c_init[name])
    x = images()
    torch.testing.assert_close(D(x, None), 0.5 * plain(x, None) + 0.5 * D.spectral_logits(x))


# ---------------------------------------------------------------------------------------------
# train.py


def test_train_flags():
    desc, args = config.training_options(data='builtin:blobs32', cfg='ssd')
    _, auto = config.training_options(data='builtin:blobs32', cfg='auto')
    assert desc.endswith('-ssd1')
    assert args.D_kwargs.class_name == 'stylefreq.ssd.SSDDiscriminator'
    assert args.D_kwargs.mode == 'official' and args.D_kwargs.ssd_lambda == 0.5
    assert args.D_kwargs.spatial_kwargs == auto.D_kwargs
    for key in ('batch_size', 'total_kimg', 'ema_kimg', 'G_kwargs', 'G_opt_kwargs', 'D_opt_kwargs', 'loss_kwargs'):
        assert args[key] == auto[key], key
    desc, args = config.training_options(data='builtin:blobs32', cfg='paper256', ssd=True)
    assert desc.endswith('-paper256-ssd')
    assert args.D_kwargs.spatial_kwargs.epilogue_kwargs.mbstd_group_size == 8
    desc, args = config.training_options(data='builtin:blobs32', cfg='cifar', ssd_lambda=0.7,
                                                  ssd_mode='joint', freezed=1, fp32=True)
    assert desc.endswith('-cifar-freezed1-ssd-ssdjoint-ssdlambda0.7')
    assert (args.D_kwargs.mode, args.D_kwargs.ssd_lambda) == ('joint', 0.7)
    spatial = args.D_kwargs.spatial_kwargs
    assert spatial.architecture == 'orig' and spatial.block_kwargs.freeze_layers == 1 and spatial.num_fp16_res == 0
    _, args = config.training_options(data='builtin:blobs32', cfg='auto', ssd=False)
    assert args.D_kwargs.class_name == 'training.networks.Discriminator'
    for bad, match in [(dict(cfg='ssd', ssd=False), 'contradicts'), (dict(ssd_lambda=1.5), r'\(0, 1\]')]:
        with pytest.raises(config.UserError, match=match):
            config.training_options(data='builtin:blobs32', **bad)


def test_train_cli_dry_run(tmp_path):
    from click.testing import CliRunner
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', 'builtin:blobs32',
                                             '--cfg', 'paper256', '--ssd-mode', 'joint', '--ssd-lambda', '0.6',
                                             '--dry-run'])
    assert result.exit_code == 0, result.output
    assert '00000-blobs32-paper256-ssd-ssdjoint-ssdlambda0.6' in result.output
    assert '"class_name": "stylefreq.ssd.SSDDiscriminator"' in result.output
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--data', 'builtin:blobs32', '--cfg', 'ssd',
                                             '--ssd', '0', '--dry-run'])
    assert result.exit_code != 0 and 'contradicts' in result.output


def _tiny_run_args(tmp_path, name, **flags):
    desc, args = builders.tiny_options(cmax=16, batch=4, snap=1, **flags)
    args.loss_kwargs.pl_weight = 0   # path length is the engine's business; R1 (gamma) stays on
    args.total_kimg = 0.004          # one iteration of 4 images: every phase, including Dreg, runs once
    args.kimg_per_tick = 0.004
    args.image_snapshot_ticks = None
    args.run_dir = str(tmp_path / f'{name}-{desc}')
    os.makedirs(args.run_dir)
    return desc, args


def _reload_and_check(snapshot):
    data = checkpoint.load_network_pkl(snapshot, verbose=False)
    D = data['D']
    assert isinstance(D, SSDDiscriminator) and isinstance(D.spatial, networks.Discriminator)
    x = images(res=16)
    again = _roundtrip(D, snapshot + '.again.pkl')
    assert torch.equal(again(x, None), D(x, None))
    return data


def test_short_ssd_training_run_and_reload(tmp_path, capsys, quick_grids):
    desc, args = _tiny_run_args(tmp_path, 'run', cfg='ssd', gamma=1)
    assert '-ssd1' in desc
    training_loop.training_loop(rank=0, **args)
    snapshots = sorted(glob.glob(os.path.join(args.run_dir, 'network-snapshot-*.pkl')))
    assert snapshots
    data = _reload_and_check(snapshots[-1])
    with open(os.path.join(args.run_dir, 'stats.jsonl')) as f:
        stats = [json.loads(line) for line in f]
    assert any('Loss/D/aux_real' in s and 'Loss/D/aux_fake' in s for s in stats)   # C trained by its hook
    health = [v['mean'] for s in stats for k, v in s.items() if k.startswith('Health/nonfinite_grads')]
    assert health and not any(health)

    # Fine-tune from a plain StyleGAN2 snapshot: the spatial D keeps its weights, C starts fresh.
    _, plain_args = _tiny_run_args(tmp_path, 'plain', cfg='auto', gamma=1)
    plain_D = construct_class_by_name(**plain_args.D_kwargs, c_dim=0, img_resolution=16, img_channels=3)
    plain_pkl = str(tmp_path / 'plain.pkl')
    G = data['G']
    checkpoint.save_network_pkl(plain_pkl, dict(G=G, D=plain_D, G_ema=data['G_ema'], training_set_kwargs={}))
    _, ft_args = _tiny_run_args(tmp_path, 'ft', cfg='ssd', gamma=1, resume=plain_pkl)
    ft_args.D_opt_kwargs = dict(ft_args.D_opt_kwargs, lr=0.0)    # keep the weights where they were loaded
    training_loop.training_loop(rank=0, **ft_args)
    out = capsys.readouterr().out
    assert 'D: 2 tensors not in the checkpoint keep their initial values' in out
    ft = checkpoint.load_network_pkl(sorted(glob.glob(os.path.join(ft_args.run_dir, '*.pkl')))[-1], verbose=False)
    for name, t in plain_D.state_dict().items():
        assert torch.equal(ft['D'].state_dict()['spatial.' + name], t), name


def _two_process_worker(proc, args):
    training_loop.setup_snapshot_image_grid = builders.small_grid
    launch.train_process(proc, args)


def test_two_process_ssd_run(tmp_path):
    """--gpus=2 on the CPU: two gloo processes (train.py's own process function) with the SSD branch."""
    if not torch.distributed.is_available():
        pytest.skip('torch.distributed is not available')
    _, args = _tiny_run_args(tmp_path, 'ddp', cfg='ssd', gpus=2, gamma=1)
    distributed.launch(_two_process_worker, num_procs=2, args=(args,))
    with open(os.path.join(args.run_dir, 'log.txt')) as f:
        assert 'Distributing across 2 processes' in f.read()
    snapshots = sorted(glob.glob(os.path.join(args.run_dir, 'network-snapshot-*.pkl')))
    assert snapshots
    _reload_and_check(snapshots[-1])
