"""torchrun across two "nodes" against --gpus=2 on one machine.

Two torchrun agents of one CPU process each meet on 127.0.0.1 through a c10d rendezvous (gloo), as
two machines would. Without --gpus, train.py must compute the presets for torchrun's world of 2:
the same options and run name as `--gpus=2` (dry runs), and the same first optimizer step (one
iteration of 8 images through training.launch, compared snapshot to snapshot).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]

from stylefreq import checkpoint

TIMEOUT = 300
TINY = ['--data=builtin:blobs16', '--cbase=256', '--cmax=32', '--map=2', '--batch=8', '--aug=noaug', '--workers=0',
        '--metrics=none']

# Trains one iteration with the options file given; the sample grids are shrunk to 8 images.
DRIVER = f'''
import json, sys
sys.path.insert(0, {str(REPO)!r})
import numpy as np
from stylefreq.kwargs import EasyDict
from training import launch, training_loop

def small_grid(training_set, random_seed=0):
    images, labels = zip(*[training_set[i] for i in range(8)])
    return (4, 2), np.stack(images), np.stack(labels)

training_loop.setup_snapshot_image_grid = small_grid      # also in spawned processes, which import this file

if __name__ == '__main__':
    launch.launch(json.load(open(sys.argv[1]), object_hook=EasyDict))
'''


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def environment():
    env = {k: v for k, v in os.environ.items()
           if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')}
    env.update(OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='', PYTHONUNBUFFERED='1')
    return env


def run_torchrun(script_args, cwd):
    """Both agents of a 2-node torchrun (one process per node); returns their (returncode, output)."""
    port = free_port()
    agents = []
    for node in (0, 1):
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', '--nproc-per-node=1',
               f'--node-rank={node}', '--rdzv-backend=c10d', f'--rdzv-endpoint=127.0.0.1:{port}',
               f'--rdzv-conf=is_host={int(node == 0)}', '--max-restarts=0', *script_args]
        agents.append(subprocess.Popen(cmd, cwd=cwd, env=environment(), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True))
    results = []
    try:
        for agent in agents:
            out, _ = agent.communicate(timeout=TIMEOUT)
            results.append((agent.returncode, out))
    finally:
        for agent in agents:
            agent.kill()
    return results


def options_of(output):
    return json.loads(output.split('Training options:')[1].split('Output directory:')[0])


def test_torchrun_two_nodes_match_gpus_2(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip('torch.distributed is not available')
    outdir = tmp_path / 'runs'

    # Options and run name: dry runs (nothing is created).
    reference = subprocess.run([sys.executable, 'train.py', f'--outdir={outdir}', '--gpus=2', *TINY, '--dry-run'],
                               cwd=REPO, env=environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    expected = options_of(reference.stdout)
    assert expected['run_dir'] == str(outdir / '00000-blobs16-auto2-batch8-noaug')
    assert (expected['num_gpus'], expected['batch_gpu']) == (2, 4)

    results = run_torchrun(['train.py', f'--outdir={outdir}', *TINY, '--dry-run'], cwd=REPO)
    for code, out in results:
        assert code == 0, out
    printed = [out for _, out in results if 'Training options:' in out]
    assert len(printed) == 1, [out for _, out in results]               # rank 0 only
    assert options_of(printed[0]) == expected
    assert not outdir.exists()

    # The first optimizer step: one iteration, both ways, from the same options.
    driver = tmp_path / 'driver.py'
    driver.write_text(DRIVER)
    snapshots = {}
    for how in ('gpus2', 'torchrun'):
        options = dict(expected, run_dir=str(tmp_path / how), total_kimg=0.008, kimg_per_tick=0.008,
                       image_snapshot_ticks=None, network_snapshot_ticks=1)
        options['G_kwargs'] = dict(expected['G_kwargs'], z_dim=32, w_dim=32)
        (tmp_path / f'{how}.json').write_text(json.dumps(options))
        if how == 'gpus2':
            done = subprocess.run([sys.executable, str(driver), str(tmp_path / f'{how}.json')], cwd=tmp_path,
                                  env=environment(), capture_output=True, text=True, timeout=TIMEOUT)
            assert done.returncode == 0, done.stdout + done.stderr
        else:
            for code, out in run_torchrun([str(driver), str(tmp_path / f'{how}.json')], cwd=tmp_path):
                assert code == 0, out
        assert 'Distributing across 2 processes' in (tmp_path / how / 'log.txt').read_text()
        snapshots[how] = checkpoint.load_network_pkl(str(tmp_path / how / 'network-snapshot-000000.pkl'),
                                                     verbose=False)

    spawned, torchrun = snapshots['gpus2'], snapshots['torchrun']
    assert spawned['progress']['cur_nimg'] == torchrun['progress']['cur_nimg'] == 8
    assert spawned['progress']['batch_idx'] == torchrun['progress']['batch_idx'] == 1
    for key in ('G', 'D', 'G_ema'):
        a = dict(list(spawned[key].named_parameters()) + list(spawned[key].named_buffers()))
        b = dict(list(torchrun[key].named_parameters()) + list(torchrun[key].named_buffers()))
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (key, name)
    for opt in ('G_opt', 'D_opt'):
        state_a, state_b = spawned['progress'][opt]['state'], torchrun['progress'][opt]['state']
        assert state_a.keys() == state_b.keys() and state_a
        # Iteration 0 runs main and regularisation phases: two Adam steps for every tensor.
        assert {float(entry['step']) for entry in state_a.values()} == {2.0}
        for index in state_a:
            for field, value in state_a[index].items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[index][field])), (opt, index, field)


def test_two_processes_continue_from_a_snapshot(tmp_path):
    """Rank 0 reads the snapshot; the progress record (optimizer state included) reaches rank 1, and
    the consistency check before the next snapshot finds both ranks equal."""
    reference = subprocess.run([sys.executable, 'train.py', f'--outdir={tmp_path}', '--gpus=2', *TINY, '--dry-run'],
                               cwd=REPO, env=environment(), capture_output=True, text=True, timeout=TIMEOUT)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    options = dict(options_of(reference.stdout), total_kimg=0.008, kimg_per_tick=0.008, image_snapshot_ticks=None,
                   network_snapshot_ticks=1)
    options['G_kwargs'] = dict(options['G_kwargs'], z_dim=32, w_dim=32)
    driver = tmp_path / 'driver.py'
    driver.write_text(DRIVER)
    first = dict(options, run_dir=str(tmp_path / 'first'))
    second = dict(options, run_dir=str(tmp_path / 'second'), total_kimg=0.016, resume_progress=True,
                  resume_pkl=str(tmp_path / 'first' / 'network-snapshot-000000.pkl'))
    for run in (first, second):
        (tmp_path / 'options.json').write_text(json.dumps(run))
        done = subprocess.run([sys.executable, str(driver), str(tmp_path / 'options.json')], cwd=tmp_path,
                              env=environment(), capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stdout + done.stderr
    snapshot = checkpoint.load_network_pkl(str(tmp_path / 'second' / 'network-snapshot-000000.pkl'), verbose=False)
    progress = snapshot['progress']
    assert (progress['cur_nimg'], progress['batch_idx'], progress['cur_tick']) == (16, 2, 2)
    # G: Gmain + Greg at iteration 0, Gmain at 1; D: Dmain + Dreg, then Dmain.
    for opt in ('G_opt', 'D_opt'):
        assert {float(entry['step']) for entry in progress[opt]['state'].values()} == {3.0}, opt
    stats = [json.loads(line) for line in (tmp_path / 'second' / 'stats.jsonl').read_text().splitlines()]
    assert [s['Progress/kimg']['mean'] for s in stats] == [0.016]
