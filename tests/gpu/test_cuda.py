"""What only a GPU runs: fp16 blocks in float16 on CUDA, the upstream parity fixtures on the device,
short train.py runs (--gpus=1; --gpus=2 over NCCL when two devices exist) with --cfg=ssd and
--freq-shift=fsg16, and generate.py / calc_metrics.py on the result. Skipped without CUDA.

    python -m pytest -q tests/gpu
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from test_parity import FIXTURES, FP16_TOL, _inputs, _output_calls, assert_close, build_networks, load_fixture

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# cuDNN picks its own algorithms and summation orders: float32 agrees with upstream's CPU numbers
# to about 1e-5 relative per layer, a little more over a whole network.
CUDA_FP32_TOL = 1e-4
# CUDA's float16 convolutions accumulate differently from the CPU's: a looser float16 bound.
CUDA_FP16_TOL = 2 * FP16_TOL


@pytest.fixture(autouse=True)
def _no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize('name', FIXTURES)
def test_fixtures_on_the_device(name):
    """Upstream's outputs (computed on the CPU) from stylefreq's networks on CUDA: float32 outputs,
    and the float16 ones from fp16 blocks, which on CUDA run in float16 without any flag."""
    meta, arrays = load_fixture(name)
    G, D = build_networks(name)
    G, D = G.cuda().eval(), D.cuda()
    inputs = {k: v.cuda() for k, v in _inputs(name).items()}
    eval_calls, _ = _output_calls(G, D, inputs, meta['cutoff'])
    S = G.synthesis
    device_calls = {   # as the fixture's fp16 outputs, without fp16_on_cpu (not needed on CUDA)
        'fp16:synthesis_const': lambda: S(inputs['ws'], noise_mode='const'),
        'fp16:synthesis_const_fused': lambda: S(inputs['ws'], noise_mode='const', fused_modconv=True),
        'fp16:synthesis_batch1': lambda: S(inputs['ws'][:1], noise_mode='const'),
        'fp16:D': lambda: D(inputs['img'], inputs['c_d']),
    }
    eval_calls.update(device_calls)
    failures = []
    for key in [k[len('out:'):] for k in arrays if k.startswith('out:')]:
        if key not in eval_calls or 'random' in key:        # CUDA draws other random noise than the CPU
            continue
        with torch.no_grad():
            got = eval_calls[key]().cpu()
        try:
            assert_close(got, arrays[f'out:{key}'], CUDA_FP16_TOL if key.startswith('fp16:') else CUDA_FP32_TOL, key)
        except AssertionError as err:
            failures.append(str(err))
    assert not failures, f'{name}:\n' + '\n'.join(failures)


def test_fp16_blocks_run_in_float16_on_cuda():
    meta, _ = load_fixture('r32_fp16_Gskip_Dresnet_clamp256')
    G, _ = build_networks('r32_fp16_Gskip_Dresnet_clamp256')
    G = G.cuda().eval()
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, out.dtype))
             for name, m in G.synthesis.named_modules() if name.endswith(('conv0', 'conv1'))]
    with torch.no_grad():
        G(torch.randn([2, G.z_dim], device='cuda'), torch.zeros([2, G.c_dim], device='cuda'), noise_mode='random')
    for h in hooks:
        h.remove()
    fp16_blocks = [f'b{r}' for r in G.synthesis.block_resolutions if getattr(G.synthesis, f'b{r}').use_fp16]
    assert fp16_blocks
    for name, dtype in seen.items():
        assert dtype == (torch.float16 if name.split('.')[0] in fp16_blocks else torch.float32), (name, dtype)


def _train(outdir, *flags):
    cmd = [sys.executable, 'train.py', f'--outdir={outdir}', '--data=builtin:blobs32', '--cbase=4096', '--cmax=128',
           '--map=2', '--batch=16', '--kimg=1', '--snap=1', '--metrics=specdisc1k', '--workers=1', *flags]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (run_dir,) = glob.glob(os.path.join(outdir, '*'))
    return run_dir, res


def _check_run(run_dir):
    stats = [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]
    assert stats and all(np.isfinite(s['Loss/G/loss']['mean']) for s in stats if 'Loss/G/loss' in s)
    assert stats[-1]['Resources/peak_gpu_mem_gb']['mean'] > 0
    snapshots = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))
    assert snapshots and os.path.exists(os.path.join(run_dir, 'metric-specdisc1k.jsonl'))
    return snapshots[-1]


@pytest.mark.parametrize('flags', [[], ['--cfg=ssd', '--freq-shift=fsg16']], ids=['fp16', 'fp16-ssd-fsg16'])
def test_train_one_gpu_then_generate_and_metrics(tmp_path, flags):
    run_dir, res = _train(tmp_path / 'runs', '--gpus=1', *flags)
    snapshot = _check_run(run_dir)
    if flags:
        assert 'Spectral/db_high' in open(os.path.join(run_dir, 'stats.jsonl')).readline()
    gen = subprocess.run([sys.executable, 'generate.py', f'--network={snapshot}', '--seeds=0-3',
                          f'--outdir={tmp_path / "images"}'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert len(os.listdir(tmp_path / 'images')) == 4
    met = subprocess.run([sys.executable, 'calc_metrics.py', f'--network={snapshot}', '--metrics=specdisc1k'],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert met.returncode == 0 and 'specdisc1k_high' in met.stdout, met.stdout[-2000:] + met.stderr[-2000:]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs two CUDA devices (NCCL)')
def test_train_two_gpus_nccl(tmp_path):
    run_dir, res = _train(tmp_path / 'runs', '--gpus=2', '--cfg=ssd')
    _check_run(run_dir)
    assert 'Distributing across 2 processes' in open(os.path.join(run_dir, 'log.txt')).read()
