"""Training acceptance tests with the real engine: train.py's flags and presets, a real run and its
run directory, two-process (gloo) training, SIGKILL + resume of a run directory, fine-tuning from an
upstream-format pickle, and non-finite gradient reporting.

Everything trains tiny networks on 16x16 data (channel_base 256, channel_max 32, 2 mapping layers,
batch 8) for a handful of iterations; where train.py's integer --kimg or 4-kimg ticks would make a
run too long, the same options dict train.py builds is passed to `training_loop` with a fractional
`total_kimg` / `kimg_per_tick` (training_options.json is exactly that dict, so a run directory
resumed through `train.py --resume=<dir>` keeps them).
"""

import io
import json
import math
import os
import pathlib
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import types
import zipfile

import numpy as np
import PIL.Image
import pytest

import builders
import torch
from click.testing import CliRunner

REPO = pathlib.Path(__file__).resolve().parents[1]

import generate
import train
from stylefreq import checkpoint, distributed
from stylefreq.kwargs import EasyDict
from training import config, launch, networks, training_loop
from training.dataset import ImageFolderDataset
from training.loss import StyleGAN2Loss

TINY_FLAGS = ['--cbase=256', '--cmax=32', '--map=2', '--batch=8', '--workers=0', '--metrics=none']
SUBPROCESS_TIMEOUT = 300


# ---------------------------------------------------------------------------------------------
# Helpers


def png_bytes(array):
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format='PNG')
    return buf.getvalue()


def write_zip(path, num=12, res=16, corrupt=(), odd_size=None, seed=0):
    """A dataset_tool-style zip of random RGB images; `corrupt` indices are truncated PNGs and
    `odd_size` = (index, resolution) gives one image another size."""
    rnd = np.random.RandomState(seed)
    with zipfile.ZipFile(path, 'w') as zf:
        for i in range(num):
            r = odd_size[1] if odd_size and odd_size[0] == i else res
            data = png_bytes(rnd.randint(0, 256, size=(r, r, 3), dtype=np.uint8))
            if i in corrupt:
                data = data[:30]
            zf.writestr(f'00000/img{i:08d}.png', data)
    return str(path)


def tiny_args(run_dir, data='builtin:blobs16', z_dim=32, **flags):
    return builders.tiny_options(run_dir, data=data, z_dim=z_dim, **flags)


def read_stats(run_dir):
    path = os.path.join(run_dir, 'stats.jsonl')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith('\n')]


def all_tensors(module):
    out = dict(module.named_parameters())
    out.update(module.named_buffers())
    return out


def invoke(main, args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_sentence_error(result):
    """The CLI failed with one 'Error: ...' line and no traceback; returns that line."""
    assert result.exit_code != 0, result.output
    assert 'Traceback' not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith('Error: ')]
    assert len(errors) == 1, result.output
    return errors[0]


# ---------------------------------------------------------------------------------------------
# 1. Command line: dry run, presets, errors


def test_dry_run_prints_options_and_upstream_run_dir(tmp_path):
    data = write_zip(tmp_path / 'ds.zip')
    outdir = tmp_path / 'runs'
    (outdir / '00007-old-run').mkdir(parents=True)
    result = invoke(train.main, [f'--outdir={outdir}', f'--data={data}', '--mirror=1', '--cfg=paper256', '--gamma=2',
                                 '--aug=ada', '--augpipe=bg', '--resume=ffhq256', '--freezed=4', '--dry-run'])
    assert result.exit_code == 0, result.output
    run_dir = outdir / '00008-ds-mirror-paper256-gamma2-ada-bg-resumeffhq256-freezed4'
    assert f'Output directory:   {run_dir}' in result.output
    assert 'Dry run; exiting.' in result.output
    options = json.loads(result.output.split('Training options:')[1].split('Output directory:')[0])
    assert options['run_dir'] == str(run_dir)
    assert options['resume_pkl'].endswith('/ffhq-res256-mirror-paper256-noaug.pkl')
    assert options['ada_kimg'] == 100 and options['ema_rampup'] is None
    assert options['D_kwargs']['block_kwargs']['freeze_layers'] == 4
    assert options['augment_kwargs'] == dict(class_name='training.augment.AugmentPipe', xflip=1, rotate90=1, xint=1,
                                             scale=1, rotate=1, aniso=1, xfrac=1)
    assert options['training_set_kwargs'] == dict(class_name='training.dataset.ImageFolderDataset', path=data,
                                                  use_labels=False, max_size=12, xflip=True, resolution=16)
    assert not run_dir.exists()                     # a dry run creates nothing

    # Every flag that changes the name, in upstream's order.
    result = invoke(train.main, [f'--outdir={tmp_path / "empty"}', '--data=builtin:blobs16', '--cond=1',
                                 '--subset=100', '--kimg=3', '--batch=16', '--aug=fixed', '--p=0.25',
                                 '--resume=https://example.org/y.pkl', '--dry-run'])
    assert result.exit_code == 0, result.output
    assert (f'{tmp_path / "empty"}{os.sep}00000-blobs16-cond-subset100-auto1-kimg3-batch16-fixed-p0.25-resumecustom'
            in result.output)


AUTO_EXPECTED = {  # resolution -> (batch, gamma, ema_kimg, lrate, channel_base, mbstd), 1 GPU (upstream's --cfg=auto)
    32: (32, 0.0064, 10, 0.0025, 16384, 4),
    256: (16, 0.8192, 5, 0.0025, 16384, 4),
    512: (8, 6.5536, 2.5, 0.0025, 32768, 4),
    1024: (4, 52.4288, 1.25, 0.002, 32768, 4),
}


@pytest.mark.parametrize('res', sorted(AUTO_EXPECTED))
def test_auto_preset_matches_upstream(res):
    desc, args = config.training_options(data=f'builtin:blobs{res}')
    batch, gamma, ema, lrate, cbase, mbstd = AUTO_EXPECTED[res]
    assert desc == f'blobs{res}-auto1'
    assert (args.batch_size, args.batch_gpu) == (batch, batch)
    assert args.loss_kwargs.r1_gamma == pytest.approx(gamma, rel=1e-12)
    assert args.ema_kimg == pytest.approx(ema) and args.ema_rampup == 0.05
    assert args.G_opt_kwargs == dict(class_name='torch.optim.Adam', lr=lrate, betas=[0, 0.99], eps=1e-8)
    assert args.D_opt_kwargs == args.G_opt_kwargs
    assert args.G_kwargs.synthesis_kwargs.channel_base == args.D_kwargs.channel_base == cbase
    assert args.G_kwargs.mapping_kwargs.num_layers == 2 and args.D_kwargs.epilogue_kwargs.mbstd_group_size == mbstd
    assert args.total_kimg == 25000 and args.ada_target == 0.6


def test_presets_match_upstream():
    # (cfg, gpus) -> batch, batch_gpu, gamma, ema, ramp, lrate, cbase, map, mbstd, kimg
    expected = {
        ('auto', 8): (64, 8, 0.0032, 20, 0.05, 0.0025, 16384, 2, 4, 25000),   # at 32 px
        ('stylegan2', 1): (32, 4, 10, 10, None, 0.002, 32768, 8, 4, 25000),
        ('paper256', 1): (64, 8, 1, 20, None, 0.0025, 16384, 8, 8, 25000),
        ('paper512', 2): (64, 8, 0.5, 20, None, 0.0025, 32768, 8, 8, 25000),
        ('paper1024', 1): (32, 4, 2, 10, None, 0.002, 32768, 8, 4, 25000),
        ('cifar', 1): (64, 32, 0.01, 500, 0.05, 0.0025, 32768, 2, 32, 100000),
    }
    for (cfg, gpus), (batch, batch_gpu, gamma, ema, ramp, lrate, cbase, map_, mbstd, kimg) in expected.items():
        desc, args = config.training_options(data='builtin:blobs32', cfg=cfg, gpus=gpus)
        assert desc == f'blobs32-{cfg}' + (str(gpus) if cfg == 'auto' else ''), cfg
        got = (args.batch_size, args.batch_gpu, args.loss_kwargs.r1_gamma, args.ema_kimg, args.ema_rampup,
               args.G_opt_kwargs.lr, args.G_kwargs.synthesis_kwargs.channel_base,
               args.G_kwargs.mapping_kwargs.num_layers, args.D_kwargs.epilogue_kwargs.mbstd_group_size, args.total_kimg)
        assert got == pytest.approx((batch, batch_gpu, gamma, ema, ramp, lrate, cbase, map_, mbstd, kimg)), cfg
        assert args.num_gpus == gpus
        assert args.G_kwargs.synthesis_kwargs.channel_max == 512 and args.G_kwargs.z_dim == 512
        assert args.G_kwargs.synthesis_kwargs.num_fp16_res == 4 and args.D_kwargs.conv_clamp == 256
    _, args = config.training_options(data='builtin:blobs32', cfg='cifar')
    assert args.loss_kwargs == dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=0.01, pl_weight=0,
                                    style_mixing_prob=0)
    assert args.D_kwargs.architecture == 'orig'
    # training_options.json keys in upstream's order.
    _, args = config.training_options(data='builtin:blobs32')
    assert list(args) == ['num_gpus', 'image_snapshot_ticks', 'network_snapshot_ticks', 'metrics', 'random_seed',
                          'training_set_kwargs', 'data_loader_kwargs', 'G_kwargs', 'D_kwargs', 'G_opt_kwargs',
                          'D_opt_kwargs', 'loss_kwargs', 'total_kimg', 'batch_size', 'batch_gpu', 'ema_kimg',
                          'ema_rampup', 'ada_target', 'augment_kwargs']
    assert args.data_loader_kwargs == dict(pin_memory=torch.cuda.is_available(), num_workers=3, prefetch_factor=2)


def test_bad_flags_give_one_sentence(tmp_path):
    good = write_zip(tmp_path / 'good.zip')
    write_zip(tmp_path / 'corrupt_first.zip', corrupt=[0])
    write_zip(tmp_path / 'npot.zip', num=2, res=12)
    (tmp_path / 'norun').mkdir()
    nosnap = tmp_path / 'runs' / '00000-nosnap'
    nosnap.mkdir(parents=True)
    (nosnap / 'training_options.json').write_text('{}')
    cases = [
        (['--gpus=3'], '--gpus must be a power of two'),
        (['--p=0.2'], '--p can only be specified with --aug=fixed'),
        (['--aug=fixed'], '--aug=fixed requires specifying --p'),
        (['--cond=1'], '--cond=True requires labels'),
        (['--target=0.5', '--aug=noaug'], '--target can only be specified with --aug=ada'),
        ([f'--data={tmp_path / "missing.zip"}'], f"'{tmp_path / 'missing.zip'}' does not exist"),
        ([f'--data={tmp_path / "corrupt_first.zip"}'],
         "'00000/img00000000.png' in '%s' is not a readable image" % (tmp_path / 'corrupt_first.zip')),
        ([f'--data={tmp_path / "npot.zip"}'], 'must be a power of two'),
        ([f'--resume={tmp_path / "norun"}'], 'not a run directory'),
        ([f'--resume={nosnap}'], 'has no network-snapshot-*.pkl to continue from'),
        (['--cbase=8'], '--cbase=8 leaves no channels at 16x16'),
    ]
    for extra, message in cases:
        flags = [f'--outdir={tmp_path / "out"}', f'--data={good}', '--dry-run'] + extra
        line = one_sentence_error(invoke(train.main, flags))
        assert message in line, (extra, line)
    assert not (tmp_path / 'out').exists()


def test_bad_data_found_during_training_is_one_sentence(tmp_path, quick_grids):
    """Only the first image is read when the dataset is opened; a corrupt or odd-sized image met
    later (reals.png export, or the DataLoader in a worker process) still ends the run with one
    sentence naming the file, in the console and in log.txt."""
    cases = [
        (write_zip(tmp_path / 'late.zip', corrupt=[7]), ['--workers=0'],
         "'00000/img00000007.png' in '%s' is not a readable image" % (tmp_path / 'late.zip')),
        (write_zip(tmp_path / 'mixed.zip', odd_size=(5, 8)), ['--workers=0'],
         "'00000/img00000005.png' in '%s' is 8x8 RGB but" % (tmp_path / 'mixed.zip')),
    ]
    # Images 8.. are corrupt: reals.png (here the first 8 images) is fine, and the first training
    # batch, read by a DataLoader worker process, meets a corrupt one.
    cases.append((write_zip(tmp_path / 'big.zip', num=40, corrupt=range(8, 40)), ['--workers=1'],
                  f"in '{tmp_path / 'big.zip'}' is not a readable image"))
    for data, extra, message in cases:
        outdir = tmp_path / ('out-' + os.path.basename(data))
        result = invoke(train.main, [f'--outdir={outdir}', f'--data={data}', '--aug=noaug', '--kimg=1', '--snap=1',
                                     *TINY_FLAGS, *extra])
        line = one_sentence_error(result)
        assert message in line, line
        (run_dir,) = outdir.iterdir()
        assert line in (run_dir / 'log.txt').read_text()


# ---------------------------------------------------------------------------------------------
# 2. A real run through train.py, its run directory, and generate.py on its snapshot


def wait_for(predicate, proc, timeout, what):
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f'the training process exited ({proc.returncode}) before {what}:\n'
                                 f'{pathlib.Path(proc.log_path).read_text()[-3000:]}')
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.05)


def start(cmd, log_path):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_path = log_path
    return proc


def test_real_run_dir_and_generate(tmp_path):
    outdir = tmp_path / 'runs'
    console = tmp_path / 'console.txt'
    proc = start([sys.executable, 'train.py', f'--outdir={outdir}', '--data=builtin:blobs16', '--aug=noaug',
                  '--kimg=1', '--snap=1', '--mirror=1', *TINY_FLAGS], console)
    try:
        run_dir = outdir / '00000-blobs16-mirror-auto1-kimg1-batch8-noaug'
        wait_for(lambda: len(read_stats(run_dir)) >= 1, proc, SUBPROCESS_TIMEOUT, 'the tick 0 statistics')
    finally:
        proc.kill()
        proc.wait()
    files = set(os.listdir(run_dir))
    assert {'training_options.json', 'log.txt', 'reals.png', 'fakes_init.png', 'fakes000000.png',
            'network-snapshot-000000.pkl', 'stats.jsonl'} <= files
    assert not [f for f in files if f.endswith('.partial')]

    options = json.loads((run_dir / 'training_options.json').read_text())
    assert options['run_dir'] == str(run_dir) and options['total_kimg'] == 1 and options['batch_size'] == 8
    assert options['training_set_kwargs']['xflip'] is True and 'augment_kwargs' not in options

    # Grids: 32x32 images of 16 px (upstream's 7680 // W, 4320 // H, clipped to 32).
    for name in ('reals.png', 'fakes_init.png', 'fakes000000.png'):
        with PIL.Image.open(run_dir / name) as im:
            assert im.size == (512, 512) and im.mode == 'RGB', name

    tick_re = (r'^tick 0\s+kimg 0\.0\s+time \S+( \S+)?\s+sec/tick [\d.]+\s+sec/kimg [\d.]+\s+maintenance [\d.]+\s+'
               r'cpumem [\d.]+\s+gpumem [\d.]+\s+augment 0\.000$')
    log = (run_dir / 'log.txt').read_text()
    assert re.search(tick_re, log, re.M), log
    assert re.search(tick_re, console.read_text(), re.M)
    assert 'Training options:' in console.read_text()

    (stats,) = read_stats(run_dir)[:1]
    for name in ['Progress/tick', 'Progress/kimg', 'Progress/augment', 'Timing/total_sec', 'Timing/sec_per_tick',
                 'Timing/sec_per_kimg', 'Timing/maintenance_sec', 'Timing/total_hours', 'Timing/total_days',
                 'Timing/Gmain', 'Timing/Greg', 'Timing/Dmain', 'Timing/Dreg', 'Resources/cpu_mem_gb',
                 'Resources/peak_gpu_mem_gb', 'Loss/scores/fake', 'Loss/scores/real', 'Loss/signs/fake',
                 'Loss/signs/real', 'Loss/G/loss', 'Loss/G/reg', 'Loss/D/loss', 'Loss/D/reg', 'Loss/pl_penalty',
                 'Loss/r1_penalty']:
        assert set(stats[name]) == {'num', 'mean', 'std'}, name
    assert stats['Progress/kimg'] == dict(num=1, mean=0.008, std=0.0)
    assert stats['Progress/tick']['mean'] == 0
    assert stats['Loss/G/loss']['num'] == 8 and stats['Loss/D/loss']['num'] == 8
    # Iteration 0 runs all four phases: reals are scored in Dmain and Dreg, pl uses half the batch.
    assert stats['Loss/scores/real']['num'] == 16 and stats['Loss/pl_penalty']['num'] == 4
    assert stats['Loss/scores/fake']['num'] == 16 and stats['Loss/r1_penalty']['num'] == 8
    assert isinstance(stats['timestamp'], float)

    # The snapshot loads and generates, from the loader and through generate.py.
    data = checkpoint.load_network_pkl(str(run_dir / 'network-snapshot-000000.pkl'))
    assert data['progress']['cur_nimg'] == 8 and data['progress']['cur_tick'] == 1
    assert data['training_set_kwargs']['path'] == 'builtin:blobs16'
    G = data['G_ema']
    assert isinstance(G, networks.Generator) and G.img_resolution == 16 and G.z_dim == 512
    result = invoke(generate.main, ['--network', run_dir / 'network-snapshot-000000.pkl', '--seeds=3-4',
                                    '--outdir', tmp_path / 'gen', '--device=cpu'])
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(4).randn(1, G.z_dim))
        ref = (G(z, torch.zeros([1, 0]), noise_mode='const', force_fp32=True).permute(0, 2, 3, 1) * 127.5 + 128)
        ref = ref.clamp(0, 255).to(torch.uint8)[0].numpy()
    got = np.asarray(PIL.Image.open(tmp_path / 'gen' / 'seed0004.png'))
    assert got.shape == (16, 16, 3) and np.array_equal(got, ref)
    assert os.path.exists(tmp_path / 'gen' / 'seed0003.png')


def test_sample_grid_size_and_class_rows():
    """Upstream's grid size rule (7680 // W and 4320 // H, clipped to [7, 32] x [4, 32]); with labels,
    every row shows a single class and the classes take turns."""
    dataset = ImageFolderDataset('builtin:blobs16', use_labels=True)
    (columns, rows), images, labels = training_loop.setup_snapshot_image_grid(dataset)
    assert (columns, rows) == (32, 32) and images.shape == (1024, 3, 16, 16) and labels.shape == (1024, 4)
    classes = labels.argmax(axis=1).reshape(rows, columns)
    assert (classes == classes[:, :1]).all() and list(classes[:8, 0]) == [0, 1, 2, 3] * 2
    assert not np.array_equal(images[:columns], images[4 * columns:5 * columns])   # repeated classes move on

    class Tiny1024:                     # three 1024 px images (the pixels are not read at that size)
        image_shape, has_labels = [1, 1024, 1024], False

        def __len__(self):
            return 3

        def __getitem__(self, idx):
            return np.full([1, 2, 2], idx, np.uint8), np.zeros([0], np.float32)
    (columns, rows), images, _ = training_loop.setup_snapshot_image_grid(Tiny1024())
    assert (columns, rows) == (7, 4) and sorted(np.unique(images)) == [0, 1, 2]      # all, repeated to fill


def test_generate_errors(tmp_path):
    out = tmp_path / 'gen'
    line = one_sentence_error(invoke(generate.main, ['--network', tmp_path / 'missing.pkl', '--seeds=0',
                                                     '--outdir', out]))
    assert 'missing.pkl' in line and 'does not exist' in line
    (tmp_path / 'notes.txt').write_text('not a pickle\n')
    line = one_sentence_error(invoke(generate.main, ['--network', tmp_path / 'notes.txt', '--seeds=0',
                                                     '--outdir', out]))
    assert 'notes.txt' in line and 'not a network pickle' in line
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=8, img_channels=3,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    checkpoint.save_network_pkl(tmp_path / 'cond.pkl', dict(G=G, D=None, G_ema=G))
    line = one_sentence_error(invoke(generate.main, ['--network', tmp_path / 'cond.pkl', '--seeds=0', '--outdir', out]))
    assert 'conditional' in line and '--class' in line
    result = invoke(generate.main, ['--network', tmp_path / 'cond.pkl', '--seeds=0', '--class=2', '--outdir', out])
    assert result.exit_code == 0 and (out / 'seed0000.png').exists()


# ---------------------------------------------------------------------------------------------
# 3. Two processes (gloo on CPU) against one process with the same total batch


class DeterministicLoss(StyleGAN2Loss):
    """StyleGAN2Loss whose randomness is a fixed function of the reals.

    Each rank draws its own z and noise (seed = random_seed * num_gpus + rank), so two ranks cannot
    reproduce a one-process run sample for sample. Here z is a fixed projection of the paired real
    image and synthesis noise is 'const', so an iteration's update depends only on which images it
    sees; the sampler gives the two ranks of a 2-process run the same 8 images as one process."""

    last = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        DeterministicLoss.last = self

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, **kwargs):
        proj = torch.randn([real_img[0].numel(), gen_z.shape[1]], generator=torch.Generator().manual_seed(5))
        gen_z = real_img.flatten(1) @ proj.to(real_img.device) / math.sqrt(real_img[0].numel())
        return super().accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain, **kwargs)

    def run_G(self, z, c):
        ws = self.G_mapping(z, c)
        return self.G_synthesis(ws, noise_mode='const'), ws


def deterministic_args(run_dir, num_gpus):
    _, args = tiny_args(run_dir, gpus=num_gpus)
    args.loss_kwargs = EasyDict(class_name=f'{__name__}.DeterministicLoss', r1_gamma=1.0, pl_weight=0)
    # SGD, so that the step is proportional to the averaged gradient (Adam would hide a scale error).
    args.G_opt_kwargs = EasyDict(class_name='torch.optim.SGD', lr=0.05)
    args.D_opt_kwargs = EasyDict(class_name='torch.optim.SGD', lr=0.05)
    args.G_reg_interval = args.D_reg_interval = None        # Gboth/Dboth: the same phases every step
    args.total_kimg = 0.024                                 # 3 iterations of 8 images
    args.kimg_per_tick = 0.016
    args.image_snapshot_ticks = None
    args.network_snapshot_ticks = 1                         # runs check_ddp_consistency at ticks 0 and 1
    args.ema_rampup = None
    return args


def trained_state():
    loss = DeterministicLoss.last
    state = {f'G_mapping.{k}': v for k, v in all_tensors(loss.G_mapping).items()}
    state.update({f'G_synthesis.{k}': v for k, v in all_tensors(loss.G_synthesis).items()})
    state.update({f'D.{k}': v for k, v in all_tensors(loss.D).items()})
    return {k: v.detach().clone() for k, v in state.items()}


def ddp_worker(proc, args, out_dir):
    """One process of a 2-process run (started by stylefreq.distributed.launch): train through
    train.py's process function, save this rank's weights, then check the consistency check and
    the gradient all-reduce in the same process group."""
    rank = proc.rank
    training_loop.setup_snapshot_image_grid = builders.small_grid
    launch.train_process(proc, args)
    torch.save(trained_state(), os.path.join(out_dir, f'rank{rank}.pt'))
    results = {}
    lin = torch.nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(float(rank))          # the last tensor checked differs on rank 1
    try:
        distributed.check_consistent(lin, 'lin')
        results['consistency'] = 'passed'
    except RuntimeError as err:
        results['consistency'] = str(err)
    # Rank 1 has no gradient for the bias (unused parameter): it counts as zero in the average.
    lin.weight.grad = torch.full_like(lin.weight, 2.0 * (rank + 1))
    lin.bias.grad = torch.full_like(lin.bias, 4.0) if rank == 0 else None
    lin.weight.grad[0, 0] = float('nan') if rank == 1 else 1.0     # NaN on one rank: NaN in the mean, zeroed
    results['nonfinite'] = int(training_loop.average_gradients(lin.parameters()))
    results['weight_grad'] = lin.weight.grad.tolist()
    results['bias_grad'] = lin.bias.grad.tolist()
    with open(os.path.join(out_dir, f'checks{rank}.json'), 'w') as f:
        json.dump(results, f)


def test_two_processes_match_one(tmp_path, quick_grids, monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')      # gloo on CPU processes, also on a GPU machine
    # One process, batch 8 in one round (same minibatch-std groups as 2 ranks x 4: the sampler
    # strides positions over ranks and the std layer groups strided samples).
    one_dir = tmp_path / 'one'
    args1 = deterministic_args(one_dir, num_gpus=1)
    initial = {}
    args1.progress_fn = lambda cur, total: initial or initial.update(trained_state())
    training_loop.training_loop(rank=0, device='cpu', **args1)
    one = trained_state()

    two_dir = tmp_path / 'two'
    args2 = deterministic_args(two_dir, num_gpus=2)
    assert (args2.batch_size, args2.batch_gpu) == (8, 4)
    distributed.launch(ddp_worker, num_procs=2, args=(args2, str(tmp_path)))
    rank0, rank1 = torch.load(tmp_path / 'rank0.pt'), torch.load(tmp_path / 'rank1.pt')

    # The ranks hold identical weights (w_avg is a per-rank running mean, as upstream).
    for name in rank0:
        if not name.endswith('w_avg'):
            assert torch.equal(rank0[name], rank1[name]), name
    # ... equal to the one-process run: the update (not just the weights) agrees.
    # Tolerance: float32 rounding of the weights (a few ulp) plus 1% of the step (summing a gradient
    # over 8 samples vs 2 x 4 rounds differently, and sums with cancellation, like the gradient of a
    # scalar noise strength, amplify that); `moved` counts tensors whose step is far above the
    # rounding, where a wrong gradient scale (e.g. a sum instead of a mean: 100%) would show.
    moved = []
    for name, t1 in one.items():
        if name.endswith('w_avg') or not t1.is_floating_point():
            continue
        step1, step2 = t1 - initial[name], rank0[name] - initial[name]
        scale = step1.abs().max().item()
        rounding = 4 * torch.finfo(torch.float32).eps * max(initial[name].abs().max().item(), t1.abs().max().item())
        assert (step2 - step1).abs().max().item() <= 1e-2 * scale + rounding, name
        if scale > 10 * rounding:
            moved.append(name)
    assert len(moved) >= 15, moved
    # ... and the saved snapshot of the 2-process run is rank 0's state.
    snap = checkpoint.load_network_pkl(str(two_dir / 'network-snapshot-000000.pkl'))
    assert snap['progress']['cur_nimg'] == 24 and snap['progress']['batch_idx'] == 3
    for name, t in all_tensors(snap['D']).items():
        assert torch.equal(t, rank0[f'D.{name}']), name

    # Statistics are reduced over ranks: each rank reports 4 samples per phase, the log shows 8,
    # with the one-process values; rank-0-only values are counted once.
    stats1, stats2 = read_stats(one_dir), read_stats(two_dir)
    assert len(stats1) == len(stats2) == 2
    for s1, s2 in zip(stats1, stats2):
        assert s2['Progress/kimg'] == s1['Progress/kimg'] and s2['Progress/kimg']['num'] == 1
        assert s2['Timing/Gboth']['num'] == s1['Timing/Gboth']['num']
        iterations = 1 if s1['Progress/tick']['mean'] == 0 else 2
        for name, per_iteration in [('Loss/G/loss', 8), ('Loss/D/loss', 8), ('Loss/scores/real', 8),
                                    ('Loss/scores/fake', 16), ('Loss/r1_penalty', 8)]:   # fakes: G and D phase
            assert s2[name]['num'] == s1[name]['num'] == per_iteration * iterations, name
            assert s2[name]['mean'] == pytest.approx(s1[name]['mean'], rel=1e-4, abs=1e-6), name
    assert 'Distributing across 2 processes' in (two_dir / 'log.txt').read_text()

    # The consistency check catches a difference; the gradient average counts a missing grad as 0.
    checks = [json.loads((tmp_path / f'checks{r}.json').read_text()) for r in range(2)]
    assert checks[0]['consistency'] == 'passed'
    assert checks[1]['consistency'].startswith('lin.bias differs between processes')
    for c in checks:
        assert c['weight_grad'] == [[0.0, 3.0]] + [[3.0, 3.0]] * 2 and c['bias_grad'] == [2.0] * 3
        assert c['nonfinite'] == 1


# ---------------------------------------------------------------------------------------------
# 4. SIGKILL mid-run, then `train.py --resume=<run dir>`

LAUNCH = ('import json, sys; from training import launch; from stylefreq.kwargs import EasyDict; '
          'launch.launch(json.load(open(sys.argv[1]), object_hook=EasyDict))')


def test_sigkill_and_resume_run_dir(tmp_path):
    run_dir = tmp_path / 'runs' / '00000-blobs16-auto1-batch8-ada'
    _, args = tiny_args(run_dir, aug='ada', z_dim=64)
    args.total_kimg = 0.12                  # 15 iterations
    args.kimg_per_tick = 0.032              # ticks after iterations 1, 5, 9, 13, and 15 (done)
    args.image_snapshot_ticks = 100
    args.network_snapshot_ticks = 1
    # ADA target below any E[sign(D(x))]: p rises by exactly 8 * 4 / (ada_kimg * 1000) every 4
    # iterations, so its value tells how many adjustments the whole run (both processes) made.
    args.ada_target = -2
    args.ada_kimg = 1
    step_p = 8 * 4 / 1000
    (run_dir / 'training_options.json').write_text(json.dumps(args, indent=2))

    proc = start([sys.executable, '-c', LAUNCH, str(run_dir / 'training_options.json')], tmp_path / 'first.txt')
    try:
        wait_for(lambda: len(read_stats(run_dir)) >= 2, proc, SUBPROCESS_TIMEOUT, 'the tick 1 snapshot')
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_stats = read_stats(run_dir)
    assert killed_stats[-1]['Progress/kimg']['mean'] < 0.12

    # What a kill during a write leaves behind: the partial files of stylefreq.files.atomic_write.
    snapshot = run_dir / 'network-snapshot-000000.pkl'
    before = tmp_path / 'before.pkl'
    shutil.copy(snapshot, before)
    (run_dir / '.network-snapshot-000000.pkl.k1ll3d.partial').write_bytes(snapshot.read_bytes()[:1000])
    (run_dir / '.fakes000001.png.x7q.partial').write_bytes(b'\x89PNG partial')   # a name the resumed run never writes
    assert (run_dir / '.lock').read_text().strip() == str(proc.pid)           # the killed run's stale lock
    start_state = checkpoint.load_network_pkl(str(before))
    progress0 = start_state['progress']
    n0, tick0, batches0 = progress0['cur_nimg'], progress0['cur_tick'], progress0['batch_idx']
    assert n0 in (40, 72, 104) and batches0 == n0 // 8 and tick0 == (n0 - 8) // 32 + 1
    assert start_state['augment_pipe'].p.item() == pytest.approx(batches0 // 4 * step_p)

    result = subprocess.run([sys.executable, 'train.py', f'--outdir={tmp_path / "runs"}', f'--resume={run_dir}'],
                            cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'Continuing {run_dir} from network-snapshot-000000.pkl' in result.stdout
    assert sorted(os.listdir(tmp_path / 'runs')) == [run_dir.name]          # continued in place

    # No partial file or lock remains, and every snapshot loads.
    assert not [f for f in os.listdir(run_dir) if f.endswith('.partial') or f == '.lock'], os.listdir(run_dir)
    snapshots = sorted(run_dir.glob('network-snapshot-*.pkl'))
    final = [checkpoint.load_network_pkl(str(p)) for p in snapshots][-1]

    # kimg and tick continue from the snapshot; the run ends where an uninterrupted one would.
    resumed_stats = read_stats(run_dir)[len(killed_stats):]
    assert resumed_stats, result.stdout
    assert resumed_stats[0]['Progress/tick']['mean'] == tick0
    assert resumed_stats[0]['Progress/kimg']['mean'] == pytest.approx(min(n0 + 32, 120) / 1000)
    assert tick0 in (len(killed_stats), len(killed_stats) + 1)
    ticks = [s['Progress/tick']['mean'] for s in read_stats(run_dir)]
    assert ticks == sorted(set(ticks))
    assert resumed_stats[-1]['Progress/kimg']['mean'] == pytest.approx(0.12)
    progress = final['progress']
    assert (progress['cur_nimg'], progress['batch_idx']) == (120, 15)

    # ADA p continued: 3 adjustments (after iterations 4, 8, 12) over both processes.
    assert final['augment_pipe'].p.item() == pytest.approx(3 * step_p)
    assert resumed_stats[-1]['Progress/augment']['mean'] == pytest.approx(3 * step_p)

    # Optimizer state continued: Adam counted every step of both processes (G: 15 main + 4 reg at
    # iterations 0, 4, 8, 12; D: 15 main + 1 reg at iteration 0), not only the resumed ones.
    for key, steps in [('G_opt', 19), ('D_opt', 16)]:
        state, state0 = progress[key]['state'], progress0[key]['state']
        assert {float(s['step']) for s in state.values()} == {steps}, key
        assert {float(s['step']) for s in state0.values()} == {batches0 + (batches0 + 3) // 4 if key == 'G_opt'
                                                              else batches0 + 1}, key
        assert set(state) == set(state0)
    log = (run_dir / 'log.txt').read_text()
    assert log.count('tick 0 ') == 1 and re.search(r'^tick 4\s+kimg 0\.1', log, re.M)


# ---------------------------------------------------------------------------------------------
# 5. Fine-tuning from an upstream-format pickle (no upstream code inside), Freeze-D


class UpstreamFormat:
    """Writes snapshots shaped like upstream's: networks as `torch_utils.persistence` records
    (type/version/module_src/class_name/state) through stand-in modules present only while dumping.
    module_src is a payload that would leave a marker file if anything executed it."""

    def __init__(self, marker):
        self.marker = marker
        tu, self.persistence = types.ModuleType('torch_utils'), types.ModuleType('torch_utils.persistence')

        def _reconstruct_persistent_obj(meta):
            raise AssertionError('never called')
        _reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
        _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
        self.persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
        tu.persistence = self.persistence
        dn, util = types.ModuleType('dnnlib'), types.ModuleType('dnnlib.util')
        self.EasyDict = type('EasyDict', (dict,), {'__module__': 'dnnlib.util'})
        util.EasyDict, dn.util = self.EasyDict, util
        self.modules = {'torch_utils': tu, 'torch_utils.persistence': self.persistence, 'dnnlib': dn,
                        'dnnlib.util': util}

    def easydict(self, obj):
        return self.EasyDict((k, self.easydict(v)) for k, v in obj.items()) if isinstance(obj, dict) else obj

    def record(self, module):
        state = {}
        for key, value in module.__dict__.items():
            if key == '_modules':
                value = {name: self.record(child) for name, child in value.items()}
            elif key in ('_parameters', '_buffers'):
                value = dict(value)
            elif key == '_init_kwargs':
                value = self.easydict(value)
            elif isinstance(value, float):
                value = np.float64(value)
            elif not isinstance(value, (bool, int, str, type(None), tuple, list, dict, set)):
                continue
            state[key] = value
        src = f'import pathlib\npathlib.Path({str(self.marker)!r}).write_text("executed")\n'
        meta = dict(type='class', version=6, module_src=src, class_name=type(module).__name__, state=state)
        return _Reduced(self.persistence._reconstruct_persistent_obj, (meta,))

    def dump(self, path, obj):
        saved = {name: sys.modules.get(name) for name in self.modules}
        sys.modules.update(self.modules)
        try:
            with open(path, 'wb') as f:
                pickle.dump(obj, f, protocol=4)
        finally:
            for name, old in saved.items():
                if old is None:
                    del sys.modules[name]
                else:
                    sys.modules[name] = old


class _Reduced:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def upstream_pickle(path, args, marker, res=16):
    common = dict(c_dim=0, img_resolution=res, img_channels=3)
    G_kwargs = {k: v for k, v in args.G_kwargs.items() if k != 'class_name'}
    D_kwargs = {k: v for k, v in args.D_kwargs.items() if k != 'class_name'}
    D_kwargs['block_kwargs'] = {}                       # the source network was trained without Freeze-D
    torch.manual_seed(123)
    G = networks.Generator(**G_kwargs, **common).eval()
    G_ema = networks.Generator(**G_kwargs, **common).eval()
    D = networks.Discriminator(**D_kwargs, **common).eval()
    up = UpstreamFormat(marker)
    up.dump(path, dict(training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset',
                                                path='/datasets/ffhq16.zip', resolution=res, xflip=True),
                       G=up.record(G), D=up.record(D), G_ema=up.record(G_ema), augment_pipe=None))
    raw = open(path, 'rb').read()
    assert b'torch_utils.persistence' in raw and b'_reconstruct_persistent_obj' in raw
    return G, D, G_ema


def test_finetune_from_upstream_pickle_with_freeze_d(tmp_path, quick_grids):
    marker = tmp_path / 'MODULE_SRC_EXECUTED'
    pkl = tmp_path / 'upstream.pkl'
    run_dir = tmp_path / 'run'
    _, plain_args = tiny_args(run_dir)
    G_src, D_src, G_ema_src = upstream_pickle(pkl, plain_args, marker)
    desc, args = tiny_args(run_dir, resume=str(pkl), freezed=2)      # reads the pickle (safely) to decide
    assert desc == 'blobs16-auto1-batch8-noaug-resumecustom-freezed2'
    assert args.resume_pkl == str(pkl) and args.ada_kimg == 100 and args.ema_rampup is None
    assert 'resume_progress' not in args
    args.G_opt_kwargs.lr = 0.0              # G stays at the pickle's weights: they must be the loaded ones
    args.total_kimg = 0.024                 # 3 iterations
    args.kimg_per_tick = 1
    args.image_snapshot_ticks = None
    args.network_snapshot_ticks = 100       # one snapshot, when done

    training_loop.training_loop(rank=0, device='cpu', **args)     # cpu: fakes_init is compared bit for bit
    assert not marker.exists()

    # fakes_init.png is the pickle's G_ema, rendered the way the loop renders its grid.
    grid_size, _, labels = training_loop.setup_snapshot_image_grid(ImageFolderDataset('builtin:blobs16'))
    grid_z = training_loop.grid_latents(labels.shape[0], G_ema_src.z_dim, seed=args.random_seed).split(8)
    grid_c = torch.from_numpy(labels).split(8)
    training_loop.save_image_grid(training_loop.render_grid(G_ema_src, grid_z, grid_c), str(tmp_path / 'ref.png'),
                                  drange=[-1, 1], grid_size=grid_size)
    assert np.array_equal(np.asarray(PIL.Image.open(run_dir / 'fakes_init.png')),
                          np.asarray(PIL.Image.open(tmp_path / 'ref.png')))

    snap = checkpoint.load_network_pkl(str(run_dir / 'network-snapshot-000000.pkl'))
    assert snap['progress']['cur_nimg'] == 24          # fine-tuning counts from 0
    assert read_stats(run_dir)[0]['Progress/kimg']['mean'] == pytest.approx(0.008)
    for name, t in all_tensors(snap['G']).items():
        if not name.endswith('w_avg'):
            assert torch.equal(t, all_tensors(G_src)[name]), name

    # Freeze-D: the first two D layers (b16.fromrgb, b16.conv0) are buffers and did not move; the rest trained.
    src, trained = all_tensors(D_src), all_tensors(snap['D'])
    frozen = [n for n in trained if n.startswith(('b16.fromrgb.', 'b16.conv0.')) and not n.endswith('resample_filter')]
    assert sorted(frozen) == ['b16.conv0.bias', 'b16.conv0.weight', 'b16.fromrgb.bias', 'b16.fromrgb.weight']
    assert not set(frozen) & set(dict(snap['D'].named_parameters()))
    for name in frozen:
        assert torch.equal(trained[name], src[name]), name
    changed = [n for n, _ in snap['D'].named_parameters() if not torch.equal(trained[n], src[n])]
    assert len(changed) >= 6, changed


def test_finetune_with_the_output_shift_drops_the_checkpoints_d_lowpass(tmp_path, quick_grids):
    """--freq-shift=out defaults to a D without anti-aliasing; fine-tuning a checkpoint made with D's
    low-pass copies every learnt tensor and keeps the filter the options chose ([1])."""
    pkl = tmp_path / 'upstream.pkl'
    run_dir = tmp_path / 'run'
    _, plain_args = tiny_args(run_dir)
    _, D_src, _ = upstream_pickle(pkl, plain_args, tmp_path / 'marker')
    desc, args = tiny_args(run_dir, resume=str(pkl), freq_shift='out')
    assert desc.endswith('-resumecustom-out-dnoaa') and args.D_kwargs.block_kwargs.resample_filter == [1]
    args.D_opt_kwargs.lr = 0.0              # D stays at the pickle's weights
    args.update(total_kimg=0.016, kimg_per_tick=1, image_snapshot_ticks=None, network_snapshot_ticks=100)
    training_loop.training_loop(rank=0, device='cpu', **args)
    D = checkpoint.load_network_pkl(str(run_dir / 'network-snapshot-000000.pkl'))['D']
    src, trained = all_tensors(D_src), all_tensors(D)
    assert set(src) == set(trained)
    # The filters of the downsampling layers (the block's, conv1, skip) are [1]; the checkpoint's were [1,3,3,1].
    down = {n for n in trained if n.endswith(('conv1.resample_filter', 'skip.resample_filter'))
            or re.fullmatch(r'b\d+\.resample_filter', n)}
    assert len(down) == 6 and all(src[n].shape == (4, 4) and trained[n].shape == (1, 1) for n in down)
    for name in set(trained) - down:
        assert torch.equal(trained[name], src[name]), name


def test_resume_mismatch_names_both_shapes(tmp_path):
    """A checkpoint of another resolution, or other channel counts, is refused with one sentence
    naming both shapes (with channel_base 256 every shared tensor of a 16 px and a 32 px network
    agrees in shape, so the image shape itself is checked)."""
    pkl = tmp_path / 'upstream16.pkl'
    _, args16 = tiny_args(tmp_path / 'unused', z_dim=512)
    upstream_pickle(pkl, args16, tmp_path / 'marker')
    common = [f'--outdir={tmp_path / "runs"}', f'--resume={pkl}', '--aug=noaug', '--kimg=1', *TINY_FLAGS]
    line = one_sentence_error(invoke(train.main, ['--data=builtin:blobs32', *common]))
    assert (f'cannot resume G from {pkl}: it was made for images of shape [3, 16, 16] but the training set has '
            f'shape [3, 32, 32]') in line, line
    line = one_sentence_error(invoke(train.main, ['--data=builtin:blobs16', *common, '--cmax=16']))
    assert re.search(r"cannot resume G: \S+ has shape \[32(, \d+)*\] in the checkpoint but \[16(, \d+)*\] in the "
                     r"network being trained", line), line
    line = one_sentence_error(invoke(train.main, ['--data=builtin:blobs16', f'--outdir={tmp_path / "runs"}',
                                                  f'--resume={tmp_path / "missing.pkl"}', *TINY_FLAGS]))
    assert 'missing.pkl' in line and 'does not exist' in line


# ---------------------------------------------------------------------------------------------
# 6. Non-finite gradients are reported, zeroed, and counted


class NaNOnceLoss(StyleGAN2Loss):
    """Injects NaN and +inf into the first D weight's gradient in the first Dmain phase."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.injected = False

    def accumulate_gradients(self, phase, *args, **kwargs):
        super().accumulate_gradients(phase, *args, **kwargs)
        if phase == 'Dmain' and not self.injected:
            self.injected = True
            grad = next(self.D.parameters()).grad.view(-1)
            grad[:3] = float('nan')
            grad[3] = float('inf')


def test_nonfinite_gradients_are_reported(tmp_path, capsys, quick_grids):
    run_dir = tmp_path / 'run'
    _, args = tiny_args(run_dir)
    args.loss_kwargs.class_name = f'{__name__}.NaNOnceLoss'
    args.total_kimg = 0.016
    args.kimg_per_tick = 1
    args.image_snapshot_ticks = None
    args.network_snapshot_ticks = 100
    training_loop.training_loop(rank=0, **args)
    out = capsys.readouterr().out
    assert 'warning: 4 non-finite gradient values in phase Dmain at kimg 0.0' in out
    assert out.count('non-finite') == 1
    first, second = read_stats(run_dir)
    assert first['Health/nonfinite_grads/Dmain'] == dict(num=1, mean=4.0, std=0.0)
    assert first['Health/nonfinite_grads/Gmain']['mean'] == 0
    assert second['Health/nonfinite_grads/Dmain'] == dict(num=1, mean=0.0, std=0.0)
    D = checkpoint.load_network_pkl(str(run_dir / 'network-snapshot-000000.pkl'))['D']
    assert all(torch.isfinite(p).all() for p in D.parameters())


def test_statistics_start_fresh_in_each_run(tmp_path, quick_grids):
    """A second training_loop in the same process (a notebook, a sweep) logs only its own samples."""
    for name in ('a', 'b'):
        _, args = tiny_args(tmp_path / name)
        args.total_kimg = 0.008
        args.image_snapshot_ticks = args.network_snapshot_ticks = None
        training_loop.training_loop(rank=0, **args)
        (stats,) = read_stats(tmp_path / name)
        assert stats['Loss/G/loss']['num'] == 8 and stats['Timing/Gmain']['num'] == 1, name
