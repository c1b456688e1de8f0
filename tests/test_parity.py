"""Upstream parity of training/networks.py and training/loss.py, pinned by committed fixtures.

tests/fixtures/parity/*.npz were produced by running NVlabs/stylegan2-ada-pytorch's own code
(tests/fixtures/make_parity_fixtures.py describes every key). Each holds the weights of a G and a
D (seeded random values, exact in float16), fixed inputs, upstream's outputs for them in every
noise mode and precision, and for three configurations the gradients of one training iteration's
four loss phases. Here stylefreq's classes are built from the same kwargs, loaded with the same
tensors, and must reproduce every table, output and gradient:

  * float32 outputs: max|diff| <= 1e-5 * max|ref| per output;
  * float16 outputs (fp16 blocks computed in float16 on the CPU, as upstream does there, through
    `fp16_on_cpu=True`): max|diff| <= 2e-3 * max|ref|;
  * gradients: per tensor max|diff| <= 1e-5 * max|ref|, floored at 1e-5 * the largest gradient of
    that phase (tensors whose gradient is nearly zero only carry rounding noise).
"""

import functools
import json
import pathlib

import numpy as np
import pytest
import torch

from stylefreq.kwargs import construct_class_by_name
from training import loss as loss_module
from training import training_stats

FIXTURE_DIR = pathlib.Path(__file__).resolve().parent / 'fixtures' / 'parity'
FIXTURES = sorted(p.stem for p in FIXTURE_DIR.glob('*.npz'))

FP32_TOL = 1e-5
FP16_TOL = 2e-3
GRAD_TOL = 1e-5


@functools.lru_cache(maxsize=None)
def load_fixture(name):
    with np.load(FIXTURE_DIR / f'{name}.npz', allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays.pop('meta')))
    return meta, arrays


LOSS_FIXTURES = [name for name in FIXTURES if load_fixture(name)[0]['loss'] is not None]
FP16_FIXTURES = [name for name in FIXTURES if load_fixture(name)[0]['fp16']]


def test_all_fixtures_present():
    assert len(FIXTURES) == 7, f'expected the 7 upstream parity fixtures in {FIXTURE_DIR}, found {FIXTURES}'
    assert len(LOSS_FIXTURES) == 3 and len(FP16_FIXTURES) == 2


def tensor(array):
    return torch.from_numpy(np.array(array, dtype=np.float32))


def tensor_rows(module):
    rows = [[name, list(t.shape), 'param'] for name, t in module.named_parameters()]
    return rows + [[name, list(t.shape), 'buffer'] for name, t in module.named_buffers()]


def build_networks(name):
    """Fresh G and D from the fixture's kwargs, in training mode without gradients, state loaded."""
    meta, arrays = load_fixture(name)
    common = dict(c_dim=meta['c_dim'], img_resolution=meta['resolution'], img_channels=meta['img_channels'])
    G = construct_class_by_name(**meta['G_kwargs'], **common).train().requires_grad_(False)
    D = construct_class_by_name(**meta['D_kwargs'], **common).train().requires_grad_(False)
    with torch.no_grad():
        for prefix, net in (('G', G), ('D', D)):
            for tname, t in list(net.named_parameters()) + list(net.named_buffers()):
                t.copy_(tensor(arrays[f'{prefix}:{tname}']))
    return G, D


def assert_close(got, ref, tol, what):
    got = got.detach().float().numpy()
    assert got.shape == ref.shape, f'{what}: shape {got.shape}, upstream {ref.shape}'
    diff = float(np.abs(got - ref).max()) if ref.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    assert diff <= tol * scale, f'{what}: max|diff| {diff:.3g} > {tol:g} * max|ref| ({scale:.3g})'

# ------------------------------------------------------------------------------------------------
# Format: names, shapes and kinds in upstream's order.


@pytest.mark.parametrize('name', FIXTURES)
def test_tensor_tables_match_upstream(name):
    meta, arrays = load_fixture(name)
    G, D = build_networks(name)
    assert tensor_rows(G) == meta['tables']['G']
    assert tensor_rows(D) == meta['tables']['D']
    assert G.num_ws == meta['num_ws']
    # Every tensor of the fixture was loaded: nothing upstream stores is unknown here.
    stored = {key for key in arrays if key.startswith(('G:', 'D:'))}
    loaded = {f'G:{row[0]}' for row in meta['tables']['G']} | {f'D:{row[0]}' for row in meta['tables']['D']}
    assert stored == loaded

# ------------------------------------------------------------------------------------------------
# Outputs.


def _inputs(name):
    meta, arrays = load_fixture(name)
    inputs = {key: tensor(arrays[f'in:{key}']) for key in ('z', 'c', 'ws', 'img', 'c_d')}
    # z2 (the latents behind `ws` and the second training-mode mapping call) is not stored; the
    # generator drew it from generator seed 7 right after z and c, which must come out identical.
    gen = torch.Generator().manual_seed(7)
    batch = meta['g_batch']
    z = torch.randn([batch, meta['G_kwargs']['z_dim']], generator=gen)
    c = torch.randn([batch, meta['c_dim']], generator=gen)
    assert torch.equal(z, inputs['z']) and torch.equal(c, inputs['c'])
    inputs['z2'] = torch.randn([batch, meta['G_kwargs']['z_dim']], generator=gen)
    return inputs


def _seeded(seed, fn):
    def call():
        torch.manual_seed(seed)
        return fn()
    return call


def _output_calls(G, D, inp, cutoff):
    """Key -> call, in the order the fixture generator made them (the last ones change w_avg)."""
    z, c, z2, ws, img, c_d = inp['z'], inp['c'], inp['z2'], inp['ws'], inp['img'], inp['c_d']
    S = G.synthesis
    eval_calls = {
        'mapping': lambda: G.mapping(z, c),
        'mapping_psi0.5': lambda: G.mapping(z, c, truncation_psi=0.5),
        'mapping_psi0.7_cutoff': lambda: G.mapping(z, c, truncation_psi=0.7, truncation_cutoff=cutoff),
        'synthesis_const': lambda: S(ws, noise_mode='const', force_fp32=True),
        'synthesis_const_unfused': lambda: S(ws, noise_mode='const', force_fp32=True, fused_modconv=False),
        'synthesis_none': lambda: S(ws, noise_mode='none', force_fp32=True),
        'synthesis_random_seed123': _seeded(123, lambda: S(ws, noise_mode='random', force_fp32=True)),
        'G_const': lambda: G(z, c, noise_mode='const', force_fp32=True),
        'G_psi0.7_cutoff': lambda: G(z, c, truncation_psi=0.7, truncation_cutoff=cutoff, noise_mode='const',
                                     force_fp32=True),
        'D': lambda: D(img, c_d, force_fp32=True),
        'fp16:synthesis_const': lambda: S(ws, noise_mode='const', fp16_on_cpu=True),
        'fp16:synthesis_const_fused': lambda: S(ws, noise_mode='const', fused_modconv=True, fp16_on_cpu=True),
        'fp16:synthesis_batch1': lambda: S(ws[:1], noise_mode='const', fp16_on_cpu=True),
        'fp16:synthesis_random_seed5': _seeded(5, lambda: S(ws, noise_mode='random', fp16_on_cpu=True)),
        'fp16:D': lambda: D(img, c_d, fp16_on_cpu=True),
    }
    train_calls = {
        'mapping_train': lambda: G.mapping(z, c),
        'w_avg_after_train_call': lambda: G.mapping.w_avg.clone(),
        'mapping_train_psi0.5': lambda: G.mapping(z2, c, truncation_psi=0.5),
        'w_avg_after_second_call': lambda: G.mapping.w_avg.clone(),
    }
    return eval_calls, train_calls


@pytest.mark.parametrize('name', FIXTURES)
def test_outputs_match_upstream(name):
    meta, arrays = load_fixture(name)
    G, D = build_networks(name)
    eval_calls, train_calls = _output_calls(G, D, _inputs(name), meta['cutoff'])
    expected = [key[len('out:'):] for key in arrays if key.startswith('out:')]
    unknown = set(expected) - set(eval_calls) - set(train_calls)
    assert not unknown, f'fixture outputs without a stylefreq call: {sorted(unknown)}'

    failures = []
    for mode, calls in (('eval', eval_calls), ('train', train_calls)):
        G.train(mode == 'train')
        for key, call in calls.items():
            if key not in expected:
                continue
            with torch.no_grad():
                got = call()
            assert got.dtype == torch.float32, f'{key}: {got.dtype}'   # images too, from float16 blocks
            try:
                assert_close(got, arrays[f'out:{key}'], FP16_TOL if key.startswith('fp16:') else FP32_TOL, key)
            except AssertionError as e:
                failures.append(str(e))
    assert not failures, f'{name}:\n' + '\n'.join(failures)


@pytest.mark.parametrize('name', FP16_FIXTURES)
def test_fp16_network_on_cpu_runs_in_float32_without_flags(name):
    """The CPU default for fp16 blocks is float32, so it reproduces upstream's force_fp32 image."""
    meta, arrays = load_fixture(name)
    G, D = build_networks(name)
    inp = _inputs(name)
    assert any(getattr(G.synthesis, f'b{r}').use_fp16 for r in G.synthesis.block_resolutions)
    G.eval()
    with torch.no_grad():
        assert_close(G.synthesis(inp['ws'], noise_mode='const'), arrays['out:synthesis_const'], FP32_TOL, 'synthesis')
        assert_close(D(inp['img'], inp['c_d']), arrays['out:D'], FP32_TOL, 'D')

# ------------------------------------------------------------------------------------------------
# Loss: one training iteration's phases, gradients after each.


UPSTREAM_STAT_NAMES = {'Loss/scores/fake', 'Loss/signs/fake', 'Loss/G/loss', 'Loss/pl_penalty', 'Loss/G/reg',
                       'Loss/scores/real', 'Loss/signs/real', 'Loss/D/loss', 'Loss/r1_penalty', 'Loss/D/reg'}


@pytest.mark.parametrize('name', LOSS_FIXTURES)
def test_loss_phases_match_upstream(name, monkeypatch):
    meta, arrays = load_fixture(name)
    G, D = build_networks(name)
    settings = meta['loss']
    augment_pipe = None
    if settings['augment'] is not None:
        augment_pipe = construct_class_by_name(**settings['augment']).train().requires_grad_(False)
        augment_pipe.p.copy_(torch.as_tensor(settings['augment_p']))
    reported = set()
    real_report = training_stats.report
    monkeypatch.setattr(training_stats, 'report', lambda n, v: (reported.add(n), real_report(n, v))[1])

    loss = loss_module.StyleGAN2Loss(device=torch.device('cpu'), G_mapping=G.mapping, G_synthesis=G.synthesis, D=D,
                                     augment_pipe=augment_pipe, r1_gamma=settings['r1_gamma'])
    assert float(loss.pl_mean) == 0.0
    real_img, real_c = tensor(arrays['loss_in:real_img']), tensor(arrays['loss_in:real_c'])
    assert [phase for phase, _ in meta['loss_phases']] == ['Gmain', 'Greg', 'Dmain', 'Dreg']

    failures = []
    for i, (phase, gain) in enumerate(meta['loss_phases']):
        net = G if phase.startswith('G') else D
        for p in net.parameters():
            p.grad = None
        net.requires_grad_(True)
        torch.manual_seed(100 + i)
        loss.accumulate_gradients(phase=phase, real_img=real_img, real_c=real_c,
                                  gen_z=tensor(arrays[f'loss_in:{phase}:gen_z']),
                                  gen_c=tensor(arrays[f'loss_in:{phase}:gen_c']), gain=gain)
        net.requires_grad_(False)

        prefix = f'loss:{phase}:grad:'
        ref_grads = {key[len(prefix):]: arrays[key] for key in arrays if key.startswith(prefix)}
        got_grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
        assert set(got_grads) == set(ref_grads), f'{phase}: parameters with gradients differ'
        floor = max(float(np.abs(g).max()) for g in ref_grads.values())
        assert floor > 0
        for pname, ref in ref_grads.items():
            diff = float(np.abs(got_grads[pname].numpy() - ref).max())
            allowed = GRAD_TOL * max(float(np.abs(ref).max()), floor)
            if not diff <= allowed:
                failures.append(f'{phase} {pname}: max|diff| {diff:.3g} > {allowed:.3g}')
        try:
            assert_close(G.mapping.w_avg, arrays[f'loss:{phase}:w_avg'], FP32_TOL, f'{phase} w_avg')
        except AssertionError as e:
            failures.append(str(e))
        try:
            assert_close(loss.pl_mean, arrays[f'loss:{phase}:pl_mean'], FP32_TOL, f'{phase} pl_mean')
        except AssertionError as e:
            failures.append(str(e))
        if phase == 'Gmain':
            assert float(loss.pl_mean) == 0.0   # only the path-length term moves it
    assert not failures, f'{name}:\n' + '\n'.join(failures)
    assert float(loss.pl_mean) > 0
    assert reported == UPSTREAM_STAT_NAMES
