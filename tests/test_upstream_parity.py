"""Parity with a stock NVlabs/stylegan2-ada-pytorch checkout.

Skipped unless the environment variable STYLEFREQ_UPSTREAM names such a checkout (CI has none):

    STYLEFREQ_UPSTREAM=/path/to/stylegan2-ada-pytorch python -m pytest -q -s tests/test_upstream_parity.py

How it works. Both projects have a top-level package called `training`, so they never share a
process. A driver script (written by this test, below) runs in a subprocess with cwd and
PYTHONPATH set to the upstream checkout only. For every configuration it
  * builds G and D the way upstream's training loop does (construct_class_by_name on the kwargs
    dict plus c_dim/img_resolution/img_channels), adds seeded noise to every float parameter and
    buffer (so zero-initialised biases, noise strengths, w_avg ... all matter; G_ema gets different
    noise than G), builds an AugmentPipe when configured,
  * writes a snapshot pickle exactly like the loop does (deepcopy(m).eval().requires_grad_(False).cpu(),
    plain `pickle.dump` with the configured protocol),
  * reloads that pickle with upstream's own loader and saves reference outputs for fixed inputs
    (plain tensors, torch.save) plus the (name, shape, kind, dtype) table of every network.
The stylefreq side then loads the same pickle with `stylefreq.checkpoint.load_network_pkl` in
this process, without executing the source embedded in it, and must reproduce every table and
output. Each fp32 output must agree to max|diff| <= 1e-4 * max(1, max|ref|) (an absolute 1e-4 for
outputs of order one; relative for the few larger ones). Run with -s to see the tables.

Nothing of upstream's code is copied here and nothing produced from it is committed: the pickles and
reference tensors live in pytest's tmp directory only.
"""

import builtins
import functools
import importlib.abc
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

UPSTREAM = os.environ.get('STYLEFREQ_UPSTREAM')

pytestmark = pytest.mark.skipif(
    not UPSTREAM, reason='set STYLEFREQ_UPSTREAM to a stylegan2-ada-pytorch checkout to run upstream parity')

FP32_TOL = 1e-4   # max|diff| allowed, relative to max(1, max|ref|)
FP16_TOL = 3e-2   # the CPU float16 path (rounding differs with operation order); same scaling

# ---------------------------------------------------------------------------------------------------
# Configurations. Tiny widths keep the whole module at about a minute on two CPU cores; one config
# ('r32_default_widths') uses the real widths that train.py's `--cfg=auto` picks at 32 px.


def _G(arch, z_dim=32, w_dim=32, map_layers=2, cb=1024, cmax=64, fp16=0, clamp=None):
    return dict(class_name='training.networks.Generator', z_dim=z_dim, w_dim=w_dim,
                mapping_kwargs=dict(num_layers=map_layers),
                synthesis_kwargs=dict(channel_base=cb, channel_max=cmax, num_fp16_res=fp16,
                                      conv_clamp=clamp, architecture=arch))


def _D(arch, cb=1024, cmax=64, fp16=0, clamp=None, mbstd=4, freeze=None):
    kw = dict(class_name='training.networks.Discriminator', architecture=arch, block_kwargs={},
              mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=mbstd), channel_base=cb,
              channel_max=cmax, num_fp16_res=fp16, conv_clamp=clamp)
    if freeze is not None:
        kw['block_kwargs']['freeze_layers'] = freeze
    return kw


_BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1,
            contrast=1, lumaflip=1, hue=1, saturation=1)

CONFIGS = [
    dict(name='r16_Gskip_Dresnet_uncond_clamp256',
         resolution=16, img_channels=3, c_dim=0, protocol=4, g_batch=3, d_batch=4, cutoff=2,
         G_kwargs=_G('skip', map_layers=2, clamp=256), D_kwargs=_D('resnet', clamp=256, mbstd=4),
         augment_kwargs=None, augment_p=0.0, fp16_check=False),
    dict(name='r32_Gorig_Dorig_cond_gray_map8_fp16',
         resolution=32, img_channels=1, c_dim=5, protocol=3, g_batch=3, d_batch=8, cutoff=4,
         G_kwargs=_G('orig', map_layers=8, cb=1024, cmax=128, fp16=4, clamp=256),
         D_kwargs=_D('orig', cb=1024, cmax=128, fp16=4, clamp=256, mbstd=4),
         augment_kwargs=dict(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1),
         augment_p=0.2, fp16_check=True),
    dict(name='r64_Gresnet_Dskip_uncond_fp16',
         resolution=64, img_channels=3, c_dim=0, protocol=4, g_batch=2, d_batch=4, cutoff=5,
         G_kwargs=_G('resnet', w_dim=48, cb=1024, cmax=64, fp16=4, clamp=256),
         D_kwargs=_D('skip', cb=1024, cmax=64, fp16=4, clamp=256, mbstd=4),
         augment_kwargs=None, augment_p=0.0, fp16_check=True),
    dict(name='r32_Gskip_Dresnet_cond_clamp0.5_freeze5',
         resolution=32, img_channels=3, c_dim=5, protocol=3, g_batch=3, d_batch=8, cutoff=3,
         G_kwargs=_G('skip', cb=2048, cmax=64, clamp=0.5),
         D_kwargs=_D('resnet', cb=2048, cmax=64, clamp=0.5, mbstd=4, freeze=5),
         augment_kwargs=dict(class_name='training.augment.AugmentPipe', **_BGC),
         augment_p=0.37, fp16_check=False),
    dict(name='r16_Gresnet_Dskip_cond_gray_map8_fp16_noclamp_proto5',
         resolution=16, img_channels=1, c_dim=5, protocol=5, g_batch=1, d_batch=4, cutoff=3,
         G_kwargs=_G('resnet', map_layers=8, cb=512, cmax=64, fp16=4),
         D_kwargs=_D('skip', cb=512, cmax=64, fp16=4, mbstd=4),
         augment_kwargs=None, augment_p=0.0, fp16_check=True),
    # train.py --cfg=auto at 32 px (fmaps 0.5 -> channel_base 16384, map 2, mbstd 4), with labels.
    dict(name='r32_default_widths',
         resolution=32, img_channels=3, c_dim=10, protocol=4, g_batch=2, d_batch=4, cutoff=4,
         G_kwargs=_G('skip', z_dim=512, w_dim=512, map_layers=2, cb=16384, cmax=512, fp16=4, clamp=256),
         D_kwargs=_D('resnet', cb=16384, cmax=512, fp16=4, clamp=256, mbstd=4),
         augment_kwargs=dict(class_name='training.augment.AugmentPipe', **_BGC),
         augment_p=0.0, fp16_check=False),
]
CONFIG_IDS = [cfg['name'] for cfg in CONFIGS]

# ---------------------------------------------------------------------------------------------------
# The upstream-side driver. It only imports upstream's public entry points; it is this project's
# own code and runs in its own process.

DRIVER = textwrap.dedent(r'''
    import copy, json, os, pickle, sys
    import torch

    import dnnlib
    import legacy
    import training.networks  # noqa: F401  (construct_class_by_name resolves these by name)
    import training.augment   # noqa: F401

    NOT_PERTURBED = {'resample_filter', 'Hz_geom', 'Hz_fbank'}  # fixed by the architecture

    def perturb(module, seed):
        """Add seeded noise to every float tensor, so that no tensor keeps a trivial init value."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, mod in module.named_modules():
                for tname, t in list(mod._parameters.items()) + list(mod._buffers.items()):
                    if t is None or not t.is_floating_point() or tname in NOT_PERTURBED:
                        continue
                    scale = 0.2
                    if tname == 'bias':
                        scale /= float(getattr(mod, 'bias_gain', 1))  # undo the lr multiplier
                    if tname == 'w_avg':
                        scale = 0.5
                    t.add_(torch.randn(t.shape, generator=gen).to(t.dtype) * scale)

    def table(module):
        rows = [(n, list(t.shape), 'param', str(t.dtype)) for n, t in module.named_parameters()]
        rows += [(n, list(t.shape), 'buffer', str(t.dtype)) for n, t in module.named_buffers()]
        return rows

    def easy(d):
        return dnnlib.EasyDict({k: easy(v) if isinstance(v, dict) else v for k, v in d.items()})

    def run(cfg, out_dir):
        name = cfg['name']
        torch.manual_seed(1000)
        common_kwargs = dict(c_dim=cfg['c_dim'], img_resolution=cfg['resolution'], img_channels=cfg['img_channels'])
        G_kwargs, D_kwargs = easy(cfg['G_kwargs']), easy(cfg['D_kwargs'])
        G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False)
        D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False)
        perturb(G, 1)
        perturb(D, 2)
        G_ema = copy.deepcopy(G).eval()
        perturb(G_ema, 3)
        augment_pipe = None
        if cfg['augment_kwargs'] is not None:
            augment_pipe = dnnlib.util.construct_class_by_name(**easy(cfg['augment_kwargs'])).train().requires_grad_(False)
            augment_pipe.p.copy_(torch.as_tensor(cfg['augment_p']))

        training_set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset',
            path=f'/datasets/{name}.zip', use_labels=cfg['c_dim'] > 0, max_size=1234, xflip=False,
            resolution=cfg['resolution'], random_seed=0)
        snapshot = dict(training_set_kwargs=dict(training_set_kwargs))
        for key, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe)]:
            if module is not None:
                module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
            snapshot[key] = module
        pkl_path = os.path.join(out_dir, f'{name}.pkl')
        with open(pkl_path, 'wb') as f:
            pickle.dump(snapshot, f, protocol=cfg['protocol'])
        del snapshot

        # Reference outputs come from the pickle as upstream itself loads it.
        with open(pkl_path, 'rb') as f:
            data = legacy.load_network_pkl(f)
        G, D, G_ema = data['G'], data['D'], data['G_ema']

        gen = torch.Generator().manual_seed(7)
        gb, db, R = cfg['g_batch'], cfg['d_batch'], cfg['resolution']
        z = torch.randn([gb, G.z_dim], generator=gen)
        c = torch.randn([gb, G.c_dim], generator=gen)
        z2 = torch.randn([gb, G.z_dim], generator=gen)
        img = torch.randn([db, G.img_channels, R, R], generator=gen) * 0.7
        c_d = torch.randn([db, D.c_dim], generator=gen)
        out = {}
        with torch.no_grad():
            # Every layer gets its own w, so a wrong ws split cannot go unnoticed.
            ws = G.mapping(z2, c) + torch.randn([gb, G.num_ws, G.w_dim], generator=gen) * 0.5
            cut = cfg['cutoff']
            out['mapping'] = G.mapping(z, c)
            out['mapping_psi0.7_cutoff'] = G.mapping(z, c, truncation_psi=0.7, truncation_cutoff=cut)
            out['mapping_psi0.5'] = G.mapping(z, c, truncation_psi=0.5)
            out['synthesis_const'] = G.synthesis(ws, noise_mode='const', force_fp32=True)
            out['synthesis_const_fused'] = G.synthesis(ws, noise_mode='const', force_fp32=True, fused_modconv=True)
            out['synthesis_const_unfused'] = G.synthesis(ws, noise_mode='const', force_fp32=True, fused_modconv=False)
            out['synthesis_none'] = G.synthesis(ws, noise_mode='none', force_fp32=True)
            for seed in (0, 123):
                torch.manual_seed(seed)
                out[f'synthesis_random_seed{seed}'] = G.synthesis(ws, noise_mode='random', force_fp32=True)
            out['G'] = G(z, c, noise_mode='const', force_fp32=True)
            out['G_psi0.7_cutoff'] = G(z, c, truncation_psi=0.7, truncation_cutoff=cut, noise_mode='const', force_fp32=True)
            out['G_ema'] = G_ema(z, c, noise_mode='const', force_fp32=True)
            out['D'] = D(img, c_d, force_fp32=True)
            if cfg['fp16_check']:
                out['fp16:synthesis_const'] = G.synthesis(ws, noise_mode='const')
                out['fp16:D'] = D(img, c_d)
        out = {k: v.detach().float().contiguous() for k, v in out.items()}

        aug = {}
        aug_attrs = {}
        if data['augment_pipe'] is not None:
            for key in ('p', 'Hz_geom', 'Hz_fbank'):
                aug[key] = getattr(data['augment_pipe'], key).detach().clone()
            aug_attrs = {k: v for k, v in vars(data['augment_pipe']).items()
                         if not k.startswith('_') and isinstance(v, (int, float, list)) and k != 'training'}
        torch.save(dict(inputs=dict(z=z, c=c, ws=ws, img=img, c_d=c_d), outputs=out, augment=aug),
                   os.path.join(out_dir, f'{name}.ref.pt'))
        meta = dict(tables={k: table(data[k]) for k in ('G', 'D', 'G_ema')},
                    training_set_kwargs=data['training_set_kwargs'], augment_attrs=aug_attrs,
                    num_ws=G.num_ws, fp16_works=True)
        with open(os.path.join(out_dir, f'{name}.meta.json'), 'w') as f:
            json.dump(meta, f)
        print(f'upstream driver: {name} done', flush=True)

    if __name__ == '__main__':
        configs_path, out_dir = sys.argv[1], sys.argv[2]
        assert 'stylefreq' not in sys.modules
        with open(configs_path) as f:
            configs = json.load(f)
        for cfg in configs:
            run(cfg, out_dir)
''')


@pytest.fixture(scope='module')
def upstream_dir(tmp_path_factory):
    """Run the driver once for all configs; return the directory with pickles and references."""
    root = os.path.abspath(UPSTREAM)
    for rel in ('dnnlib', 'torch_utils', 'legacy.py', os.path.join('training', 'networks.py')):
        if not os.path.exists(os.path.join(root, rel)):
            pytest.fail(f'STYLEFREQ_UPSTREAM={UPSTREAM} does not look like a stylegan2-ada-pytorch checkout '
                        f'(no {rel})')
    out = tmp_path_factory.mktemp('upstream_parity')
    driver = out / 'driver.py'
    driver.write_text(DRIVER)
    configs_path = out / 'configs.json'
    configs_path.write_text(json.dumps(CONFIGS))
    env = dict(os.environ)
    env['PYTHONPATH'] = root
    env.pop('PYTHONSTARTUP', None)
    proc = subprocess.run([sys.executable, str(driver), str(configs_path), str(out)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f'upstream driver failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}')
    return out


# ---------------------------------------------------------------------------------------------------
# The stylefreq side.

class _ImportRecorder(importlib.abc.MetaPathFinder):
    """Refuses (and records) imports of upstream's support packages and of exec'd pickle modules."""
    BLOCKED = ('torch_utils', 'dnnlib')

    def __init__(self):
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in self.BLOCKED or name.startswith('_imported_module_'):
            self.attempts.append(name)
            raise ImportError(f'parity test: import of {name!r} refused while loading an upstream pickle')
        return None


def _load_guarded(pkl_path):
    """load_network_pkl with checks that nothing from the pickle was imported or executed."""
    from stylefreq.checkpoint import load_network_pkl

    recorder = _ImportRecorder()
    executed = []
    real_exec, real_compile = builtins.exec, builtins.compile

    def _is_pickled_source(src):
        # The pickles embed the text of upstream's training/networks.py and training/augment.py
        # (module_src); those import torch_utils, which no stylefreq module does.
        if isinstance(src, bytes):
            src = src.decode('utf-8', 'replace')
        return isinstance(src, str) and ('from torch_utils import' in src or src.strip() in _upstream_sources())

    def spy_exec(src, *args, **kwargs):
        if _is_pickled_source(src):
            executed.append(('exec', str(src)[:80]))
            raise RuntimeError('parity test: exec of source embedded in an upstream pickle refused')
        return real_exec(src, *args, **kwargs)

    def spy_compile(src, *args, **kwargs):
        if _is_pickled_source(src):
            executed.append(('compile', str(src)[:80]))
            raise RuntimeError('parity test: compile of source embedded in an upstream pickle refused')
        return real_compile(src, *args, **kwargs)

    before = set(sys.modules)
    sys.meta_path.insert(0, recorder)
    builtins.exec, builtins.compile = spy_exec, spy_compile
    data, error = None, None
    try:
        data = load_network_pkl(str(pkl_path))
    except Exception as e:
        error = e
    finally:
        builtins.exec, builtins.compile = real_exec, real_compile
        sys.meta_path.remove(recorder)
    new_modules = sorted(m for m in set(sys.modules) - before
                         if m.split('.')[0] in _ImportRecorder.BLOCKED or m.startswith('_imported_module_'))
    return data, dict(import_attempts=recorder.attempts, executed=executed, new_modules=new_modules, error=error)


@functools.lru_cache(maxsize=None)
def _upstream_sources():
    texts = set()
    for rel in (('training', 'networks.py'), ('training', 'augment.py')):
        with open(os.path.join(UPSTREAM, *rel), encoding='utf-8') as f:
            texts.add(f.read().strip())
    return frozenset(texts)


_LOADED = {}


def _load(upstream_dir, name):
    if name not in _LOADED:
        _LOADED[name] = _load_guarded(upstream_dir / f'{name}.pkl')
    error = _LOADED[name][1]['error']
    if error is not None:
        raise RuntimeError(f'stylefreq.checkpoint.load_network_pkl({name}.pkl) failed: '
                           f'{type(error).__name__}: {error}') from error
    return _LOADED[name][0]


def _meta(upstream_dir, name):
    with open(upstream_dir / f'{name}.meta.json') as f:
        return json.load(f)


def _ref(upstream_dir, name):
    return torch.load(upstream_dir / f'{name}.ref.pt', weights_only=True)


def _table(module):
    rows = [(n, list(t.shape), 'param', str(t.dtype)) for n, t in module.named_parameters()]
    rows += [(n, list(t.shape), 'buffer', str(t.dtype)) for n, t in module.named_buffers()]
    return rows


def _table_diff(ref_rows, got_rows):
    ref = {r[0]: tuple(r[1:]) for r in ref_rows}
    got = {r[0]: tuple(r[1:]) for r in got_rows}
    problems = []
    for n in ref:
        if n not in got:
            problems.append(f'missing in stylefreq: {n} {ref[n]}')
        elif got[n] != ref[n]:
            problems.append(f'differs: {n} upstream {ref[n]} stylefreq {got[n]}')
    for n in got:
        if n not in ref:
            problems.append(f'extra in stylefreq: {n} {got[n]}')
    return problems


RESULTS = []  # (config, output, max|diff|, max|ref|, tolerance, ok) for the summary table


@pytest.fixture(scope='module', autouse=True)
def _print_summary():
    yield
    if not RESULTS:
        return
    lines = ['', 'upstream parity: max|stylefreq - upstream| per output',
             f'{"config":54s} {"output":28s} {"max|diff|":>10s} {"max|ref|":>9s} {"tol":>8s}  ok']
    for cfg, out, diff, scale, tol, ok in RESULTS:
        lines.append(f'{cfg:54s} {out:28s} {diff:10.3g} {scale:9.3g} {tol:8.1g}  {"ok" if ok else "MISMATCH"}')
    print('\n'.join(lines))


def _ensure_no_upstream_importable():
    for mod in ('torch_utils', 'dnnlib'):
        assert mod not in sys.modules, f'{mod} is already imported in the test process'
        assert importlib.util.find_spec(mod) is None, \
            f'{mod} is importable in the test process; the no-execution check would be weaker'


# ---------------------------------------------------------------------------------------------------
# Tests.

@pytest.mark.parametrize('cfg', CONFIGS, ids=CONFIG_IDS)
def test_pickle_is_upstream_format(upstream_dir, cfg):
    """Sanity of the fixture: a real persistence pickle with embedded source, at the wanted protocol."""
    raw = (upstream_dir / f'{cfg["name"]}.pkl').read_bytes()
    assert raw[0] == 0x80 and raw[1] == cfg['protocol']
    assert b'_reconstruct_persistent_obj' in raw and b'module_src' in raw and b'persistent_class' in raw


@pytest.mark.parametrize('cfg', CONFIGS, ids=CONFIG_IDS)
def test_load_does_not_execute_pickled_code(upstream_dir, cfg):
    _ensure_no_upstream_importable()
    if cfg['name'] not in _LOADED:
        _LOADED[cfg['name']] = _load_guarded(upstream_dir / f'{cfg["name"]}.pkl')
    checks = _LOADED[cfg['name']][1]
    assert checks['import_attempts'] == [], f'loader tried to import {checks["import_attempts"]}'
    assert checks['executed'] == [], f'loader executed pickled source: {checks["executed"]}'
    assert checks['new_modules'] == []
    _load(upstream_dir, cfg['name'])  # and loading itself succeeded
    for mod in ('torch_utils', 'dnnlib'):
        assert mod not in sys.modules
    assert not any(m.startswith('_imported_module_') for m in sys.modules)


@pytest.mark.parametrize('cfg', CONFIGS, ids=CONFIG_IDS)
def test_names_shapes_kinds(upstream_dir, cfg):
    data = _load(upstream_dir, cfg['name'])
    meta = _meta(upstream_dir, cfg['name'])
    problems = []
    for key in ('G', 'D', 'G_ema'):
        assert isinstance(data[key], torch.nn.Module), f'{key} is {type(data[key])}'
        ref_rows = meta['tables'][key]
        got_rows = _table(data[key])
        problems += [f'{key}: {p}' for p in _table_diff(ref_rows, got_rows)]
        if not problems:
            ref_order = [r[0] for r in ref_rows if r[2] == 'param']
            got_order = [r[0] for r in got_rows if r[2] == 'param']
            if ref_order != got_order:
                first = next(i for i, (a, b) in enumerate(zip(ref_order + [None], got_order + [None])) if a != b)
                problems.append(f'{key}: named_parameters() order differs at #{first}: upstream '
                                f'{ref_order[first:first + 3]} stylefreq {got_order[first:first + 3]}')
    assert not problems, f'{cfg["name"]}: {len(problems)} table problems:\n' + '\n'.join(problems)


def _check_outputs(upstream_dir, cfg, keys, tol):
    data = _load(upstream_dir, cfg['name'])
    ref = _ref(upstream_dir, cfg['name'])
    G, D, G_ema = data['G'], data['D'], data['G_ema']
    inp = ref['inputs']
    z, c, ws, img, c_d = inp['z'], inp['c'], inp['ws'], inp['img'], inp['c_d']
    cut = cfg['cutoff']
    calls = {
        'mapping': lambda: G.mapping(z, c),
        'mapping_psi0.7_cutoff': lambda: G.mapping(z, c, truncation_psi=0.7, truncation_cutoff=cut),
        'mapping_psi0.5': lambda: G.mapping(z, c, truncation_psi=0.5),
        'synthesis_const': lambda: G.synthesis(ws, noise_mode='const', force_fp32=True),
        'synthesis_const_fused': lambda: G.synthesis(ws, noise_mode='const', force_fp32=True, fused_modconv=True),
        'synthesis_const_unfused': lambda: G.synthesis(ws, noise_mode='const', force_fp32=True, fused_modconv=False),
        'synthesis_none': lambda: G.synthesis(ws, noise_mode='none', force_fp32=True),
        'G': lambda: G(z, c, noise_mode='const', force_fp32=True),
        'G_psi0.7_cutoff': lambda: G(z, c, truncation_psi=0.7, truncation_cutoff=cut, noise_mode='const', force_fp32=True),
        'G_ema': lambda: G_ema(z, c, noise_mode='const', force_fp32=True),
        'D': lambda: D(img, c_d, force_fp32=True),
        'fp16:synthesis_const': lambda: G.synthesis(ws, noise_mode='const'),
        'fp16:D': lambda: D(img, c_d),
    }
    for seed in (0, 123):
        def random_noise(seed=seed):
            torch.manual_seed(seed)
            return G.synthesis(ws, noise_mode='random', force_fp32=True)
        calls[f'synthesis_random_seed{seed}'] = random_noise

    failures = []
    for key in keys:
        if key not in ref['outputs']:
            continue
        expected = ref['outputs'][key]
        try:
            with torch.no_grad():
                got = calls[key]()
        except Exception as e:  # report every output, not just the first failing one
            failures.append(f'{key}: raised {type(e).__name__}: {e}')
            RESULTS.append((cfg['name'], key, float('nan'), float(expected.abs().max()), tol, False))
            continue
        if tuple(got.shape) != tuple(expected.shape):
            failures.append(f'{key}: shape {tuple(got.shape)} != upstream {tuple(expected.shape)}')
            RESULTS.append((cfg['name'], key, float('nan'), float(expected.abs().max()), tol, False))
            continue
        got = got.detach().float()
        diff = float((got - expected).abs().max())
        scale = float(expected.abs().max())
        ok = diff <= tol * max(1.0, scale)
        RESULTS.append((cfg['name'], key, diff, scale, tol, ok))
        if not ok:
            failures.append(f'{key}: max|diff| {diff:.3g} (max|ref| {scale:.3g}, tol {tol * max(1.0, scale):.3g})')
    return failures


FP32_OUTPUTS = ['mapping', 'mapping_psi0.7_cutoff', 'mapping_psi0.5', 'synthesis_const', 'synthesis_const_fused',
                'synthesis_const_unfused', 'synthesis_none', 'G', 'G_psi0.7_cutoff', 'G_ema', 'D']


@pytest.mark.parametrize('cfg', CONFIGS, ids=CONFIG_IDS)
def test_fp32_outputs_match(upstream_dir, cfg):
    failures = _check_outputs(upstream_dir, cfg, FP32_OUTPUTS, FP32_TOL)
    assert not failures, f'{cfg["name"]}:\n' + '\n'.join(failures)


@pytest.mark.parametrize('cfg', CONFIGS, ids=CONFIG_IDS)
def test_random_noise_same_draw_order(upstream_dir, cfg):
    """noise_mode='random' after torch.manual_seed(s): stylefreq draws noise in upstream's order."""
    ref = _ref(upstream_dir, cfg['name'])['outputs']
    # The fixture is only meaningful if noise changes the image.
    assert float((ref['synthesis_random_seed0'] - ref['synthesis_const']).abs().max()) > 1e-3
    failures = _check_outputs(upstream_dir, cfg, ['synthesis_random_seed0', 'synthesis_random_seed123'], FP32_TOL)
    assert not failures, f'{cfg["name"]}:\n' + '\n'.join(failures)


@pytest.mark.parametrize('cfg', [c for c in CONFIGS if c['fp16_check']], ids=[c['name'] for c in CONFIGS if c['fp16_check']])
def test_fp16_path_close(upstream_dir, cfg):
    """Default force_fp32=False runs the top blocks in float16 (upstream does so on CPU too)."""
    failures = _check_outputs(upstream_dir, cfg, ['fp16:synthesis_const', 'fp16:D'], FP16_TOL)
    assert not failures, f'{cfg["name"]}:\n' + '\n'.join(failures)


def _find_tensor(obj, name, depth=0):
    """A tensor called `name` in a module, an object's attributes or a (nested) record of dicts."""
    if depth > 4 or obj is None:
        return None
    if isinstance(obj, torch.nn.Module):
        found = dict(obj.named_buffers()).get(name, dict(obj.named_parameters()).get(name))
        if found is not None:
            return found
    if isinstance(obj, dict):
        items = obj
    elif hasattr(obj, '__dict__'):
        items = vars(obj)
    else:
        return None
    if isinstance(items.get(name), torch.Tensor):
        return items[name]
    for value in items.values():
        if isinstance(value, (dict, torch.nn.Module)) or (hasattr(value, '__dict__') and not isinstance(value, type)):
            found = _find_tensor(value, name, depth + 1)
            if found is not None:
                return found
    return None


@pytest.mark.parametrize('cfg', CONFIGS, ids=CONFIG_IDS)
def test_training_set_kwargs_and_augment_pipe_kept(upstream_dir, cfg):
    data = _load(upstream_dir, cfg['name'])
    meta = _meta(upstream_dir, cfg['name'])
    ref = _ref(upstream_dir, cfg['name'])
    assert dict(data['training_set_kwargs']) == meta['training_set_kwargs']
    if cfg['augment_kwargs'] is None:
        assert data['augment_pipe'] is None
        return
    pipe = data['augment_pipe']
    assert pipe is not None
    for key in ('p', 'Hz_geom', 'Hz_fbank'):
        got = _find_tensor(pipe, key)
        assert got is not None, f'augment_pipe ({type(pipe).__name__}) lost its {key!r} tensor'
        assert torch.equal(got.detach().cpu().float(), ref['augment'][key].float()), key
    # Probability multipliers etc., where the loaded object exposes them as attributes.
    for k, v in meta['augment_attrs'].items():
        if isinstance(pipe, torch.nn.Module) and hasattr(pipe, k):
            got = getattr(pipe, k)
            got = list(got) if isinstance(got, tuple) else got
            assert got == v, f'augment_pipe.{k}: {getattr(pipe, k)!r} != upstream {v!r}'
