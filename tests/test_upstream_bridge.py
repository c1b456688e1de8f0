"""The bridge to a stock StyleGAN2-ADA-PyTorch checkout: patches/, python -m stylefreq.patch, stylefreq.export.

Plain tests (always): the patch files are well-formed with minimal context, the apply command's
errors, the structure of exported pickles and their reload through stylefreq's safe loader, and
the option wiring `stylefreq.upstream.configure_training`.

Tests marked `upstream` run only when STYLEFREQ_UPSTREAM names a checkout of
NVlabs/stylegan2-ada-pytorch (commit d72cc7d); they work on copies, never on the checkout itself:

    STYLEFREQ_UPSTREAM=~/src/stylegan2-ada-pytorch python -m pytest -q tests/test_upstream_bridge.py

They need upstream's own dependencies (click, psutil, pillow, scipy) in this Python. Upstream code
always runs in a subprocess with PYTHONPATH = <checkout>:<stylefreq>, as a user's checkout would.
"""

import copy
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from stylefreq import checkpoint, export, features, upstream
from stylefreq import patch as sf_patch
from stylefreq.kwargs import EasyDict, construct_class_by_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCH_DIR = os.path.join(ROOT, 'patches')
UPSTREAM = os.environ.get('STYLEFREQ_UPSTREAM')
needs_upstream = pytest.mark.skipif(not UPSTREAM, reason='STYLEFREQ_UPSTREAM does not name a StyleGAN2-ADA checkout')

BASE_G = dict(class_name='training.networks.Generator', z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2),
              synthesis_kwargs=dict(channel_base=256, channel_max=16))
BASE_D = dict(class_name='training.networks.Discriminator', channel_base=256, channel_max=16,
              epilogue_kwargs=dict(mbstd_group_size=2))


def _nets(kind, c_dim=0, res=16):
    common = dict(c_dim=c_dim, img_resolution=res, img_channels=3)
    torch.manual_seed(1)
    if kind == 'plain':
        G, D = construct_class_by_name(**common, **BASE_G), construct_class_by_name(**common, **BASE_D)
    else:
        G = construct_class_by_name(**common, class_name='stylefreq.freqshift.FrequencyShiftedGenerator',
                                    base_kwargs=BASE_G, mode={'fsg': 'fsg', 'learn': 'learn', 'out': 'out'}[kind],
                                    carriers=[[0.5, 0.5]] if kind == 'out' else [[1 / 16, 0], [0, 1 / 8]],
                                    gain_init=0.3)
        D = construct_class_by_name(**common, class_name='stylefreq.ssd.SSDDiscriminator', spatial_kwargs=BASE_D,
                                    mode='official' if kind != 'learn' else 'joint', ssd_lambda=0.7)
    G_ema = copy.deepcopy(G)
    with torch.no_grad():   # G_ema differs from G (as after training)
        for p, q in zip(G_ema.parameters(), G.parameters()):
            p.copy_(q + 0.01 * torch.randn_like(q))
    return dict(G=G.eval(), D=D.eval(), G_ema=G_ema.eval(),
                training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path='data', resolution=res))


def _outputs(data, c_dim=0, seed=5):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn([4, data['G_ema'].z_dim], generator=g)
    c = torch.eye(max(c_dim, 1))[[0, 1, 0, 1]][:, :c_dim] if c_dim else None
    with torch.no_grad():
        img = data['G_ema'](z, c, truncation_psi=0.7, noise_mode='const')
        logits = data['D'](img, c)
    return z, c, img, logits


class _RecordingUnpickler(pickle.Unpickler):
    """Records globals and keeps persistent-object metas without executing anything."""

    def __init__(self, f):
        super().__init__(f)
        self.globals = set()

    def find_class(self, module, name):
        self.globals.add(f'{module}.{name}')
        if (module, name) == ('torch_utils.persistence', '_reconstruct_persistent_obj'):
            return lambda meta: ('META', meta)
        return super().find_class(module, name)


# ------------------------------------------------------------------------------------------------
# Patch files and the apply command.


def _hunks(text):
    return re.findall(r'^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@', text, flags=re.M)


def test_patch_files_are_well_formed_with_minimal_context():
    files = sf_patch.patch_files(PATCH_DIR)
    assert len(files) >= 4
    for path in files:
        text = open(path).read()
        assert text.startswith('diff --git '), path
        assert 'NVIDIA' not in ''.join(ln for ln in text.splitlines(True) if ln.startswith('+')), path
        # Walk every hunk: the line counts in its header match its body, and it has at most 3
        # context lines in a row (minimal upstream context).
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r'^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@', lines[i])
            if not m:
                i += 1
                continue
            old_n, new_n = int(m.group(1) or 1), int(m.group(2) or 1)
            old = new = run = 0
            i += 1
            while i < len(lines) and (old < old_n or new < new_n):
                tag = lines[i][:1]
                if tag == ' ' or lines[i] == '':
                    old += 1
                    new += 1
                    run += 1
                    assert run <= 3, f'{path}: more than 3 context lines in a row near line {i + 1}'
                elif tag == '-':
                    old += 1
                    run = 0
                elif tag == '+':
                    new += 1
                    run = 0
                elif tag != '\\':
                    raise AssertionError(f'{path}: malformed hunk line {i + 1}: {lines[i]!r}')
                i += 1
            assert (old, new) == (old_n, new_n), f'{path}: hunk line counts do not match its header'


def _run_patch(args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, '-m', 'stylefreq.patch'] + args, capture_output=True, text=True, env=env,
                          cwd=ROOT)


def test_apply_command_refuses_a_directory_that_is_no_checkout(tmp_path):
    res = _run_patch([str(tmp_path)])
    assert res.returncode == 1
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and 'Traceback' not in res.stderr
    assert f'{tmp_path} is not a StyleGAN2-ADA-PyTorch checkout' in err
    res = _run_patch([str(tmp_path / 'missing')])
    assert res.returncode == 1 and 'is not a directory' in res.stderr


@pytest.mark.skipif(shutil.which('git') is None, reason='git not installed')
def test_apply_command_names_the_patch_and_file_that_do_not_apply(tmp_path):
    for m in sf_patch.CHECKOUT_MARKERS:
        p = tmp_path / m
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text('something else\n')
    res = _run_patch([str(tmp_path)])
    assert res.returncode == 1
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1
    assert re.search(r'0001-\S+\.patch does not apply to .*: \S+ (does not match near line \d+|is missing)', err), err
    assert 'nothing was changed' in err
    assert all((tmp_path / m).read_text() == 'something else\n' for m in sf_patch.CHECKOUT_MARKERS)


# ------------------------------------------------------------------------------------------------
# Export.


@pytest.mark.parametrize('kind', ['plain', 'fsg', 'learn', 'out'])
def test_export_pickle_structure_and_reload(tmp_path, kind):
    data = _nets(kind)
    dest = tmp_path / 'up.pkl'
    metas = export.export_network_pkl(data, dest)
    with open(dest, 'rb') as f:
        u = _RecordingUnpickler(f)
        raw = u.load()
    assert list(raw) == ['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe']
    assert raw['augment_pipe'] is None and raw['training_set_kwargs']['path'] == 'data'
    assert 'torch_utils.persistence._reconstruct_persistent_obj' in u.globals
    assert not any(g.startswith(('stylefreq.', 'training.', 'dnnlib.')) for g in u.globals), u.globals
    expect = {'plain': ('Generator', 'Discriminator')}.get(kind, ('FrequencyShiftedGenerator', 'SSDDiscriminator'))
    for key, cls in zip(('G', 'D', 'G_ema'), expect + expect[:1]):
        tag, meta = raw[key]
        assert tag == 'META' and set(meta) == {'type', 'version', 'module_src', 'class_name', 'state'}
        assert meta['type'] == 'class' and meta['version'] == 6 and meta['class_name'] == cls
        src = meta['module_src']
        assert 'NVIDIA' not in src and 'Copyright' not in src and export.EXPORT_MARKER in src
        assert src.rstrip().endswith('install_shims(globals())')
        assert meta['state']['format'] == 'stylefreq.module' and meta['state']['tensors'] and metas[key]['class_name'] == cls
    # stylefreq's loader rebuilds the networks (without running module_src) with identical outputs.
    back = checkpoint.load_network_pkl(str(dest), verbose=False)
    for key in ('G', 'D', 'G_ema'):
        assert type(back[key]) is type(data[key])
        sd_a = dict(data[key].named_parameters()) | dict(data[key].named_buffers())
        sd_b = dict(back[key].named_parameters()) | dict(back[key].named_buffers())
        assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    for a, b in zip(_outputs(data)[2:], _outputs(back)[2:]):
        assert torch.equal(a, b)


def test_export_command(tmp_path):
    data = _nets('fsg')
    snap = tmp_path / 'snap.pkl'
    checkpoint.save_network_pkl(snap, dict(data, augment_pipe=None))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    res = subprocess.run([sys.executable, '-m', 'stylefreq.export', f'--network={snap}', f'--dest={tmp_path / "up.pkl"}'],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert 'G=FrequencyShiftedGenerator' in res.stdout and 'D=SSDDiscriminator' in res.stdout
    back = checkpoint.load_network_pkl(str(tmp_path / 'up.pkl'), verbose=False)
    assert torch.equal(_outputs(data)[2], _outputs(back)[2])
    res = subprocess.run([sys.executable, '-m', 'stylefreq.export', f'--network={tmp_path / "nope.pkl"}',
                          f'--dest={tmp_path / "x.pkl"}'], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 1 and res.stderr.startswith('error:') and 'Traceback' not in res.stderr


def test_export_refuses_foreign_networks(tmp_path):
    class Foreign(torch.nn.Module):
        pass
    data = _nets('plain')
    data['D'] = Foreign()
    with pytest.raises(export.ExportError, match='not a stylefreq class'):
        export.export_network_pkl(data, tmp_path / 'x.pkl')


# ------------------------------------------------------------------------------------------------
# Option wiring used by the train.py patch.


def _upstream_like_args(res=32):
    return EasyDict(training_set_kwargs=EasyDict(resolution=res),
                    G_kwargs=EasyDict(BASE_G), D_kwargs=EasyDict(BASE_D))


def test_configure_training():
    args = _upstream_like_args()
    desc = upstream.configure_training('ds-ssd1', args, ssd=True, ssd_mode='joint', ssd_lambda=0.6, freq_shift='fsg16')
    assert desc == 'ds-ssd1-ssdjoint-ssdlambda0.6-fsg16'
    assert args.D_kwargs.class_name == 'stylefreq.ssd.SSDDiscriminator'
    assert args.D_kwargs.spatial_kwargs['class_name'] == 'training.networks.Discriminator'
    assert (args.D_kwargs.mode, args.D_kwargs.ssd_lambda) == ('joint', 0.6)
    assert args.G_kwargs.class_name == 'stylefreq.freqshift.FrequencyShiftedGenerator'
    assert args.G_kwargs.base_kwargs['class_name'] == 'training.networks.Generator'
    json.dumps(args)
    args = _upstream_like_args()
    assert upstream.configure_training('ds-auto1', args) == 'ds-auto1'
    assert args.G_kwargs.class_name == 'training.networks.Generator'
    for kw, msg in [(dict(freq_shift='bogus'), '--freq-shift'), (dict(ssd_lambda=2.0), '--ssd-lambda'),
                    (dict(freq_shift='fsg16', res=8), 'at least 16')]:
        res = kw.pop('res', 32)
        with pytest.raises(ValueError, match=msg):
            upstream.configure_training('x', _upstream_like_args(res), **kw)


# ------------------------------------------------------------------------------------------------
# With an upstream checkout.


def _copy_checkout(dst):
    shutil.copytree(UPSTREAM, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    return str(dst)


def _upstream_env(checkout, **extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([checkout, ROOT]), PYTHONDONTWRITEBYTECODE='1')
    env.update(extra)
    return env


def _run_upstream(checkout, args, timeout=1200, **env):
    return subprocess.run([sys.executable] + args, cwd=checkout, env=_upstream_env(checkout, **env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def patched(tmp_path_factory):
    if not UPSTREAM:
        pytest.skip('STYLEFREQ_UPSTREAM not set')
    checkout = _copy_checkout(tmp_path_factory.mktemp('up') / 'patched')
    report = sf_patch.apply_patches(checkout)
    assert [what for _n, what in report] == ['applied'] * len(report)
    assert [what for _n, what in sf_patch.apply_patches(checkout, check_only=True)] == ['already applied'] * len(report)
    return checkout


@pytest.fixture(scope='module')
def dataset16(tmp_path_factory):
    from PIL import Image
    d = tmp_path_factory.mktemp('ds') / 'ds16'
    d.mkdir()
    rng = np.random.RandomState(0)
    for i in range(32):
        y, x = np.mgrid[:16, :16]
        img = 127 + 100 * np.sin(2 * np.pi * (x * (i % 4 + 1) + y) / 16)[..., None] * np.ones(3) + rng.randn(16, 16, 3) * 10
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f'img{i:03d}.png')
    return str(d)


def _options_json(stdout):
    m = re.search(r'Training options:\n(\{.*?\n\})\n', stdout, flags=re.S)
    assert m, stdout[-2000:]
    return json.loads(m.group(1))


@needs_upstream
def test_upstream_dry_run_accepts_the_new_flags(patched, dataset16, tmp_path):
    res = _run_upstream(patched, ['train.py', f'--outdir={tmp_path}', f'--data={dataset16}', '--cfg=ssd',
                                  '--ssd-lambda=0.6', '--ssd-mode=joint', '--freq-shift=1/16,0;0,1/8', '--dry-run'])
    assert res.returncode == 0, res.stderr[-3000:]
    opts = _options_json(res.stdout)
    assert opts['run_dir'].endswith('-ds16-ssd1-ssdjoint-ssdlambda0.6-fsgcustom')
    D, G = opts['D_kwargs'], opts['G_kwargs']
    assert (D['class_name'], D['mode'], D['ssd_lambda']) == ('stylefreq.ssd.SSDDiscriminator', 'joint', 0.6)
    assert D['spatial_kwargs']['class_name'] == 'training.networks.Discriminator'
    assert (G['class_name'], G['mode'], G['carriers']) == ('stylefreq.freqshift.FrequencyShiftedGenerator', 'fsg',
                                                           [[0.0625, 0.0], [0.0, 0.125]])
    assert G['base_kwargs']['class_name'] == 'training.networks.Generator'
    assert opts['loss_kwargs']['r1_gamma'] == pytest.approx(0.0002 * 16 ** 2 / 32)   # auto's numbers for ssd
    res = _run_upstream(patched, ['train.py', f'--outdir={tmp_path}', f'--data={dataset16}', '--metrics=specdisc,fid_levels',
                                  '--freq-shift=out', '--dry-run'])
    assert res.returncode == 0, res.stderr[-3000:]
    assert _options_json(res.stdout)['metrics'] == ['specdisc', 'fid_levels']
    assert f'warning: {features.OUT_SHIFT_RISK}; this checkout keeps upstream\'s D' in res.stdout
    res = _run_upstream(patched, ['train.py', f'--outdir={tmp_path}', f'--data={dataset16}', '--freq-shift=bogus', '--dry-run'])
    out = res.stdout + res.stderr   # upstream's logger sends stderr to stdout
    assert res.returncode != 0 and "--freq-shift: 'bogus' is neither" in out and 'Traceback' not in out


# The training run goes through upstream's own train.py main(); the driver only shrinks the
# networks (upstream has no capacity flags) and the image grid (upstream draws 32x32 fakes at 16 px),
# so that a CPU run takes a minute instead of an hour.
_TRAIN_DRIVER = textwrap.dedent('''
    import sys
    import train
    from training import training_loop
    setup = train.setup_training_loop_kwargs
    def small(**kw):
        desc, args = setup(**kw)
        def shrink(d):
            if isinstance(d, dict):
                for k in d:
                    if k == 'channel_base': d[k] = 256
                    elif k == 'channel_max': d[k] = 16
                    else: shrink(d[k])
        shrink(args.G_kwargs); shrink(args.D_kwargs)
        args.G_kwargs.get('base_kwargs', args.G_kwargs)['mapping_kwargs']['num_layers'] = 1
        return desc, args
    train.setup_training_loop_kwargs = small
    grid = training_loop.setup_snapshot_image_grid
    def small_grid(training_set, random_seed=0):
        _wh, images, labels = grid(training_set, random_seed)
        return (4, 2), images[:8], labels[:8]
    training_loop.setup_snapshot_image_grid = small_grid
    if __name__ == '__main__':   # DataLoader workers are spawned and re-import this file
        train.main(sys.argv[1:])
''')


@pytest.fixture(scope='module')
def trained(patched, dataset16, tmp_path_factory):
    outdir = tmp_path_factory.mktemp('runs')
    driver = os.path.join(patched, '_stylefreq_test_train.py')
    with open(driver, 'w') as f:
        f.write(_TRAIN_DRIVER)
    res = _run_upstream(patched, [driver, f'--outdir={outdir}', f'--data={dataset16}', '--cfg=ssd', '--ssd-lambda=0.6',
                                  '--freq-shift=fsg16', '--kimg=1', '--batch=32', '--aug=fixed', '--p=0.3', '--fp32=1',
                                  '--snap=1', '--metrics=specdisc1k', '--workers=1'])
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    (run_dir,) = [os.path.join(outdir, d) for d in os.listdir(outdir)]
    return run_dir, res


@needs_upstream
def test_upstream_training_runs_on_cpu_with_ssd_and_freq_shift(trained):
    run_dir, res = trained
    files = set(os.listdir(run_dir))
    assert {'training_options.json', 'log.txt', 'fakes_init.png', 'network-snapshot-000000.pkl',
            'network-snapshot-000001.pkl', 'stats.jsonl', 'metric-specdisc1k.jsonl'} <= files, files
    assert 'grid_sample_gradfix not supported' not in res.stderr and 'conv2d_gradfix not supported' not in res.stderr
    stats = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert stats[-1]['Progress/kimg']['mean'] >= 1
    assert stats[-1]['Loss/r1_penalty']['num'] > 0        # R1 through the augment pipe's grid_sample
    metric = [json.loads(line) for line in open(os.path.join(run_dir, 'metric-specdisc1k.jsonl'))]
    assert set(metric[-1]['results']) == {f'specdisc1k_{k}' for k in ('all', 'low', 'mid', 'high', 'leakage')}
    assert all(np.isfinite(v) for v in metric[-1]['results'].values())


@needs_upstream
def test_patched_checkout_snapshot_loads_in_stylefreq_without_its_code(trained, tmp_path):
    """A snapshot written inside a patched checkout pickles stylefreq's wrappers by reference around
    upstream networks that carry their module_src: stylefreq loads it, runs none of that source, and
    the rebuilt networks produce images and logits."""
    run_dir, _ = trained
    pkl = os.path.join(run_dir, 'network-snapshot-000001.pkl')
    with open(pkl, 'rb') as f:
        raw = f.read()
    assert b'stylefreq.freqshift' in raw and b'_reconstruct_persistent_obj' in raw and b'module_src' in raw
    before = set(sys.modules)
    data = checkpoint.load_network_pkl(pkl, verbose=False)
    assert not any(m.split('.')[0] in ('torch_utils', 'dnnlib') or m.startswith('_imported_module_')
                   for m in set(sys.modules) - before)
    G, D = data['G_ema'], data['D']
    assert type(G).__name__ == 'FrequencyShiftedGenerator' and type(D).__name__ == 'SSDDiscriminator'
    assert type(G.mapping).__module__ == 'training.networks' and D.ssd_lambda == 0.6
    img = G(torch.randn(2, G.z_dim), None, noise_mode='const')
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    assert torch.isfinite(D(img, None)).all()
    res = subprocess.run([sys.executable, 'generate.py', f'--network={pkl}', '--seeds=0-1', f'--outdir={tmp_path}'],
                         capture_output=True, text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(os.listdir(tmp_path)) == ['seed0000.png', 'seed0001.png']


_MAKE_PLAIN_UPSTREAM_PKL = textwrap.dedent('''
    import copy, pickle, sys, torch
    from training import networks
    torch.manual_seed(0)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=16)
    data = dict(training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=sys.argv[2],
                use_labels=False, max_size=32, xflip=False, resolution=16), G=G, D=D, G_ema=copy.deepcopy(G),
                augment_pipe=None)
    data = {k: (copy.deepcopy(v).eval().requires_grad_(False) if isinstance(v, torch.nn.Module) else v) for k, v in data.items()}
    with open(sys.argv[1], 'wb') as f:
        pickle.dump(data, f)
''')

_FAKE_DETECTOR = textwrap.dedent('''
    import sys, torch
    class Detector(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            x = x.to(torch.float32) / 255
            feats = [x.mean(dim=[2, 3]), x.std(dim=[2, 3]), torch.nn.functional.avg_pool2d(x, 8).flatten(1)[:, :6]]
            return torch.cat(feats, dim=1)
    torch.jit.script(Detector()).save(sys.argv[1])
''')


@needs_upstream
def test_upstream_calc_metrics_specdisc_and_fid_levels(patched, dataset16, trained, tmp_path):
    plain = str(tmp_path / 'plain.pkl')
    script = tmp_path / 'mk.py'
    script.write_text(_MAKE_PLAIN_UPSTREAM_PKL)
    res = _run_upstream(patched, [str(script), plain, dataset16])
    assert res.returncode == 0, res.stderr[-3000:]
    det = str(tmp_path / 'detector.pt')
    (tmp_path / 'det.py').write_text(_FAKE_DETECTOR)
    assert subprocess.run([sys.executable, str(tmp_path / 'det.py'), det]).returncode == 0
    run_dir, _ = trained
    snapshot = os.path.join(run_dir, 'network-snapshot-000001.pkl')
    for network in (plain, snapshot):
        res = _run_upstream(patched, ['calc_metrics.py', '--metrics=specdisc1k,fid_levels1k', f'--network={network}',
                                      f'--data={dataset16}', '--mirror=0'],
                            STYLEFREQ_INCEPTION_URL=det, DNNLIB_CACHE_DIR=str(tmp_path / 'cache'))
        assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
        lines = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith('{"results"')]
        if not lines:   # with training_options.json next to the pickle, results go to metric-*.jsonl
            lines = [json.loads(ln) for m in ('specdisc1k', 'fid_levels1k')
                     for ln in open(os.path.join(run_dir, f'metric-{m}.jsonl'))][-2:]
        results = {k: v for ln in lines for k, v in ln['results'].items()}
        assert {'specdisc1k_all', 'specdisc1k_high', 'specdisc1k_leakage', 'fid_levels1k_fc0.0000',
                'fid_levels1k_fc0.1592'} <= set(results), results
        assert all(np.isfinite(v) for v in results.values())


_LOAD_IN_UPSTREAM = textwrap.dedent('''
    import sys, torch, copy, pickle
    import dnnlib, legacy
    with dnnlib.util.open_url(sys.argv[1]) as f:
        data = legacy.load_network_pkl(f)
    ref = torch.load(sys.argv[2])
    G, D = data['G_ema'], data['D']
    assert 'torch_utils.persistence' in type(G).__module__, type(G)
    with torch.no_grad():
        img = G(ref['z'], ref['c'], truncation_psi=0.7, noise_mode='const')
        logits = D(img, ref['c'])
        img2 = pickle.loads(pickle.dumps(copy.deepcopy(G)))(ref['z'], ref['c'], truncation_psi=0.7, noise_mode='const')
    torch.save(dict(img=img, logits=logits, img2=img2, names=[type(data[k]).__name__ for k in ('G', 'D', 'G_ema')]), sys.argv[3])
''')


@needs_upstream
@pytest.mark.parametrize('kind,c_dim', [('plain', 0), ('plain', 3), ('fsg', 0), ('learn', 0), ('out', 0)])
def test_exported_pickle_loads_in_a_stock_checkout_with_the_same_images(tmp_path_factory, tmp_path, kind, c_dim):
    stock = str(tmp_path_factory.getbasetemp() / 'stock')
    if not os.path.isdir(stock):
        _copy_checkout(stock)
    data = _nets(kind, c_dim=c_dim)
    dest = str(tmp_path / 'up.pkl')
    export.export_network_pkl(data, dest)
    z, c, img, logits = _outputs(data, c_dim)
    torch.save(dict(z=z, c=c), tmp_path / 'ref.pt')
    (tmp_path / 'load.py').write_text(_LOAD_IN_UPSTREAM)
    res = _run_upstream(stock, [str(tmp_path / 'load.py'), dest, str(tmp_path / 'ref.pt'), str(tmp_path / 'out.pt')],
                        timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = torch.load(tmp_path / 'out.pt')
    assert (out['img'] - img).abs().max().item() <= 1e-4
    assert (out['logits'] - logits).abs().max().item() <= 1e-4
    assert torch.equal(out['img2'], out['img'])
    assert out['names'][0] == ('Generator' if kind == 'plain' else 'FrequencyShiftedGenerator')
