"""training/config.py and train.py's command line: options, run names and refusals.

The expected options are upstream's (StyleGAN2-ADA's train.py); the references below are
written out by hand from that table, not taken from the code under test. Nothing here trains.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

REPO = pathlib.Path(__file__).resolve().parents[1]

import train
from stylefreq import checkpoint, features
from training import config, networks

TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def invoke(args):
    return CliRunner().invoke(train.main, [str(a) for a in args], catch_exceptions=False)


def one_sentence_error(result):
    assert result.exit_code != 0, result.output
    assert 'Traceback' not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith('Error: ')]
    assert len(errors) == 1, result.output
    return errors[0]


def dry_run_options(output):
    return json.loads(output.split('Training options:')[1].split('Output directory:')[0])


@pytest.fixture
def torchrun(monkeypatch):
    """Pretend to be process `rank` of a torchrun of `world` processes (one per node)."""
    def set_world(world, rank=0):
        for name, value in dict(RANK=rank, WORLD_SIZE=world, LOCAL_RANK=0, LOCAL_WORLD_SIZE=1,
                                MASTER_ADDR='127.0.0.1', MASTER_PORT=29500).items():
            monkeypatch.setenv(name, str(value))
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    return set_world


# ---------------------------------------------------------------------------------------------
# Options


def test_option_order_and_values_match_upstream():
    desc, options = config.training_options(data='builtin:blobs64', cfg='paper256', gpus=2, mirror=True, gamma=2,
                                            aug='ada', target=0.7, augpipe='bg', freezed=3, nobench=True,
                                            allow_tf32=True, workers=1)
    assert desc == 'blobs64-mirror-paper256-gamma2-ada-target0.7-bg-freezed3'
    assert list(options) == ['num_gpus', 'image_snapshot_ticks', 'network_snapshot_ticks', 'metrics', 'random_seed',
                             'training_set_kwargs', 'data_loader_kwargs', 'G_kwargs', 'D_kwargs', 'G_opt_kwargs',
                             'D_opt_kwargs', 'loss_kwargs', 'total_kimg', 'batch_size', 'batch_gpu', 'ema_kimg',
                             'ema_rampup', 'ada_target', 'augment_kwargs', 'cudnn_benchmark', 'allow_tf32']
    # paper256 column: mb 64 on 8 reference GPUs, mbstd 8, fmaps 0.5, lr 0.0025, gamma 1 (overridden), ema 20.
    assert (options.batch_size, options.batch_gpu, options.ema_kimg, options.ema_rampup) == (64, 8, 20, None)
    assert options.G_kwargs == dict(class_name='training.networks.Generator', z_dim=512, w_dim=512,
                                    mapping_kwargs=dict(num_layers=8),
                                    synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4,
                                                          conv_clamp=256))
    assert options.D_kwargs == dict(class_name='training.networks.Discriminator', block_kwargs=dict(freeze_layers=3),
                                    mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=8), channel_base=16384,
                                    channel_max=512, num_fp16_res=4, conv_clamp=256)
    assert options.loss_kwargs == dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=2.0)
    assert options.ada_target == 0.7 and options.cudnn_benchmark is False and options.allow_tf32 is True
    assert list(options.augment_kwargs) == ['class_name', 'xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso',
                                            'xfrac']
    assert options.data_loader_kwargs.num_workers == 1
    json.dumps(options)


def test_subset_seed_and_fixed_augmentation():
    desc, options = config.training_options(data='builtin:blobs32', subset=10, seed=5, aug='fixed', p=0.25,
                                            fp32=True, nhwc=True)
    assert desc == 'blobs32-subset10-auto1-fixed-p0.25'
    assert options.training_set_kwargs == dict(class_name='training.dataset.ImageFolderDataset',
                                               path='builtin:blobs32', use_labels=False, max_size=10, xflip=False,
                                               resolution=32, random_seed=5)
    assert options.augment_p == 0.25 and 'ada_target' not in options
    synthesis = options.G_kwargs.synthesis_kwargs
    assert (synthesis.num_fp16_res, synthesis.conv_clamp, synthesis.fp16_channels_last) == (0, None, True)
    assert (options.D_kwargs.num_fp16_res, options.D_kwargs.conv_clamp) == (0, None)
    assert options.D_kwargs.block_kwargs == dict(fp16_channels_last=True)
    # A subset of all images is no subset: the name says so, the data stays whole.
    desc, options = config.training_options(data='builtin:blobs32', subset=512, aug='noaug')
    assert desc == 'blobs32-subset512-auto1-noaug' and options.training_set_kwargs.max_size == 512
    assert 'random_seed' not in options.training_set_kwargs and 'augment_kwargs' not in options


def test_resume_names_fine_tune_like_upstream():
    for name, tail in [('ffhq256', 'ffhq-res256-mirror-paper256-noaug.pkl'),
                       ('ffhq512', 'ffhq-res512-mirror-stylegan2-noaug.pkl'),
                       ('ffhq1024', 'ffhq-res1024-mirror-stylegan2-noaug.pkl'),
                       ('celebahq256', 'celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl'),
                       ('lsundog256', 'lsundog-res256-paper256-kimg100000-noaug.pkl')]:
        desc, options = config.training_options(data='builtin:blobs32', resume=name)
        assert desc == f'blobs32-auto1-resume{name}'
        assert options.resume_pkl == ('https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/'
                                      'transfer-learning-source-nets/' + tail)
        assert options.ada_kimg == 100 and options.ema_rampup is None
        assert list(options)[-2:] == ['resume_pkl', 'ada_kimg']
    desc, options = config.training_options(data='builtin:blobs32', resume='noresume')
    assert desc == 'blobs32-auto1-noresume' and 'resume_pkl' not in options


def _snapshot(path, data_path, progress=True, res=16):
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    data = dict(G=G, D=None, G_ema=G, training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset',
                                                                 path=data_path))
    if progress:
        data['progress'] = dict(cur_nimg=64, cur_tick=3, batch_idx=8, G_opt={}, D_opt={}, pl_mean=0.5)
    checkpoint.save_network_pkl(path, data)
    return str(path)


def test_snapshot_resume_continues_on_the_same_data_and_fine_tunes_otherwise(tmp_path):
    same = _snapshot(tmp_path / 'same.pkl', 'builtin:blobs16')
    desc, options = config.training_options(data='builtin:blobs16', resume=same)
    assert desc == 'blobs16-auto1-resumecustom'
    assert options.resume_pkl == same and options.resume_progress is True
    assert 'ada_kimg' not in options and options.ema_rampup == 0.05          # a continuation, not a fine-tune
    for pkl in (_snapshot(tmp_path / 'other.pkl', '/data/elsewhere.zip'),
                _snapshot(tmp_path / 'plain.pkl', 'builtin:blobs16', progress=False)):
        _, options = config.training_options(data='builtin:blobs16', resume=pkl)
        assert 'resume_progress' not in options and options.ada_kimg == 100 and options.ema_rampup is None
    _, options = config.training_options(data='builtin:blobs16', resume=pathlib.Path(same).as_uri())
    assert options.resume_pkl == same and options.resume_progress is True
    with pytest.raises(config.UserError, match=r'made for images of shape \[3, 16, 16\] but the training set has '
                                               r'shape \[3, 32, 32\]'):
        config.training_options(data='builtin:blobs32', resume=same)


def test_torchrun_world_sets_the_presets(torchrun):
    """Under torchrun without --gpus the presets are those of --gpus=<world size>, name included."""
    reference = config.training_options(data='builtin:blobs32', gpus=4)
    torchrun(4, rank=3)
    assert config.training_options(data='builtin:blobs32') == reference
    assert config.training_options(data='builtin:blobs32', gpus=4) == reference
    desc, options = reference
    assert desc == 'blobs32-auto4' and options.num_gpus == 4
    # auto at 32 px with 4 GPUs: mb = max(min(4 * 32, 64), 4) = 64, gamma = 0.0002 * 32^2 / 64, ema = 64 * 10 / 32.
    assert (options.batch_size, options.batch_gpu, options.ema_kimg) == (64, 16, 20.0)
    assert options.loss_kwargs.r1_gamma == pytest.approx(0.0032, rel=1e-12)
    with pytest.raises(config.UserError, match='--gpus=2 does not match the 4 processes torchrun started'):
        config.training_options(data='builtin:blobs32', gpus=2)
    torchrun(3)
    with pytest.raises(config.UserError, match='torchrun started 3 processes'):
        config.training_options(data='builtin:blobs32')


def test_features_are_one_implementation():
    """train.py's options and the upstream bridge's configure_training wrap the same way."""
    from stylefreq import upstream
    from stylefreq.kwargs import EasyDict
    desc, options = config.training_options(data='builtin:blobs32', cfg='paper512', ssd_mode='joint',
                                            ssd_lambda=0.7, freq_shift='1/16,0;0,1/16')
    assert desc == 'blobs32-paper512-ssd-ssdjoint-ssdlambda0.7-fsgcustom'
    _, plain = config.training_options(data='builtin:blobs32', cfg='paper512')
    args = EasyDict(training_set_kwargs=EasyDict(resolution=32), G_kwargs=plain.G_kwargs, D_kwargs=plain.D_kwargs)
    assert upstream.configure_training('blobs32-paper512', args, ssd_mode='joint', ssd_lambda=0.7,
                                       freq_shift='1/16,0;0,1/16') == desc
    assert (args.G_kwargs, args.D_kwargs) == (options.G_kwargs, options.D_kwargs)
    assert options.D_kwargs.spatial_kwargs == plain.D_kwargs and options.G_kwargs.base_kwargs == plain.G_kwargs
    for flags, message in [(dict(ssd=False, cfg='ssd'), 'contradicts'), (dict(ssd_lambda=0.0), r'\(0, 1\]'),
                           (dict(ssd_lambda=float('nan')), r'\(0, 1\]'), (dict(ssd_mode='both'), '--ssd-mode'),
                           (dict(freq_shift='fsg32'), '--freq-shift')]:
        with pytest.raises(config.UserError, match=message):
            config.training_options(data='builtin:blobs32', **flags)
        with pytest.raises(features.FeatureError, match=message):
            features.configure('x', dict(class_name='G'), dict(class_name='D'), resolution=32,
                               preset_ssd=flags.get('cfg') == 'ssd',
                               **{k: v for k, v in flags.items() if k != 'cfg'})


# ---------------------------------------------------------------------------------------------
# The command line: one sentence, exit code 2, nothing written


@pytest.mark.parametrize('flags,message', [
    (['--seed=-1'], "Invalid value for '--seed'"),
    (['--gamma=inf'], "Invalid value for '--gamma'"),
    (['--gamma=nan'], "Invalid value for '--gamma'"),
    (['--p=nan', '--aug=fixed'], "Invalid value for '--p'"),
    (['--kimg=0'], "Invalid value for '--kimg'"),
    (['--batch=0'], "Invalid value for '--batch'"),
    (['--snap=0'], "Invalid value for '--snap'"),
    (['--workers=-1'], "Invalid value for '--workers'"),
    (['--threads=0'], "Invalid value for '--threads'"),
    (['--ssd-lambda=0'], "Invalid value for '--ssd-lambda'"),
    (['--resume=ftp://example.org/net.pkl'], "unsupported URL scheme 'ftp'"),
    (['--resume=MISSING'], 'missing.pkl does not exist'),
    (['--batch=6', '--mbstd-group=4'], 'is not a multiple of the minibatch-std group size'),
    (['--cfg=stylegan2', '--gpus=16'], 'set --batch'),
    (['--metrics=fid'], "--metrics: unknown metric 'fid'"),
])
def test_bad_values_are_one_sentence_and_leave_nothing(tmp_path, flags, message):
    outdir = tmp_path / 'runs'
    flags = [f.replace('MISSING', str(tmp_path / 'missing.pkl')) for f in flags]
    result = invoke([f'--outdir={outdir}', '--data=builtin:blobs16', *flags])      # not a dry run
    line = one_sentence_error(result)
    assert message in line, line
    assert result.exit_code == 2
    assert not outdir.exists()


def test_outdir_that_cannot_hold_runs(tmp_path):
    blocker = tmp_path / 'a-file'
    blocker.write_text('x')
    for outdir, message in [(blocker, 'is a file, not a directory'), (blocker / 'sub', 'is not a directory')]:
        line = one_sentence_error(invoke([f'--outdir={outdir}', '--data=builtin:blobs16']))
        assert f'--outdir={outdir}' in line and message in line, line


def test_run_directory_numbering(tmp_path):
    (tmp_path / '00007-old').mkdir()
    (tmp_path / '00012-a-file').write_text('')           # files do not count
    (tmp_path / 'notes').mkdir()
    assert config.run_directory(tmp_path, 'x') == str(tmp_path / '00008-x')
    assert config.run_directory(tmp_path / 'new', 'y') == str(tmp_path / 'new' / '00000-y')


def _run_dir(tmp_path):
    run_dir = tmp_path / 'runs' / '00000-blobs16'
    run_dir.mkdir(parents=True)
    _, options = config.training_options(data='builtin:blobs16', kimg=1, aug='noaug', batch=8, cbase=256, cmax=32)
    options.run_dir = str(run_dir)
    (run_dir / 'training_options.json').write_text(json.dumps(options))
    _snapshot(run_dir / 'network-snapshot-000000.pkl', 'builtin:blobs16')
    _snapshot(run_dir / 'network-snapshot-000002.pkl', 'builtin:blobs16')
    return run_dir


def test_continue_a_run_directory_in_place(tmp_path):
    run_dir = _run_dir(tmp_path)
    result = invoke([f'--outdir={tmp_path / "elsewhere"}', f'--resume={run_dir}', '--kimg=3', '--snap=2',
                     '--dry-run'])
    assert result.exit_code == 0, result.output
    options = dry_run_options(result.output)
    assert options['run_dir'] == str(run_dir) and list(options)[-3:] == ['resume_pkl', 'resume_progress', 'run_dir']
    assert options['resume_pkl'] == str(run_dir / 'network-snapshot-000002.pkl') and options['resume_progress']
    assert (options['total_kimg'], options['network_snapshot_ticks'], options['batch_size']) == (3, 2, 8)
    assert not (tmp_path / 'elsewhere').exists()
    line = one_sentence_error(invoke([f'--outdir={tmp_path}', f'--resume={run_dir}', '--cfg=paper256']))
    assert f'--cfg cannot be combined with --resume={run_dir}' in line
    line = one_sentence_error(invoke([f'--outdir={tmp_path}', f'--resume={run_dir}', '--gpus=2']))
    assert 'was trained with 1 processes' in line


def test_a_locked_run_directory_is_refused(tmp_path):
    """A second process continuing the same run directory stops with one sentence naming the first."""
    run_dir = _run_dir(tmp_path)
    other = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        (run_dir / '.lock').write_text(f'{other.pid}\n')
        result = invoke([f'--outdir={tmp_path}', f'--resume={run_dir}'])
        line = one_sentence_error(result)
        assert f'is in use by process {other.pid}' in line and result.exit_code == 1
        assert (run_dir / '.lock').read_text().strip() == str(other.pid)       # still the other's
        assert not (run_dir / 'log.txt').exists()
    finally:
        other.kill()
        other.wait()


def test_help_lists_every_flag():
    result = CliRunner().invoke(train.main, ['--help'])
    assert result.exit_code == 0
    for flag in ['--outdir', '--gpus', '--snap', '--metrics', '--seed', '--dry-run', '--data', '--cond', '--subset',
                 '--mirror', '--cfg', '--gamma', '--kimg', '--batch', '--aug', '--p', '--target', '--augpipe',
                 '--resume', '--freezed', '--fp32', '--nhwc', '--nobench', '--allow-tf32', '--workers', '--threads',
                 '--cbase', '--cmax', '--map', '--mbstd-group', '--ssd', '--ssd-lambda', '--ssd-mode', '--freq-shift']:
        assert flag in result.output, flag


def test_threads_flag_reaches_the_process_launcher(tmp_path, monkeypatch):
    """--threads goes to stylefreq.distributed.launch, which sets torch's threads in every process
    (an explicit OMP_NUM_THREADS otherwise wins over cores / processes: configure_threads)."""
    calls = []
    monkeypatch.setattr(train.distributed, 'launch', lambda worker, num_procs, args, threads, device: calls.append(
        (num_procs, threads, args[0].run_dir)))
    for flags, threads in [(['--threads=3'], 3), ([], None)]:
        result = invoke([f'--outdir={tmp_path}', '--data=builtin:blobs16', '--gpus=2', *flags])
        assert result.exit_code == 0, result.output
        assert calls[-1][:2] == (2, threads)
    assert not os.path.exists(calls[-1][2])          # the run directory is the processes' to create


def test_d_antialias_flag_options_name_and_advice(tmp_path):
    _, plain = config.training_options(data='builtin:blobs32')
    assert 'resample_filter' not in plain.D_kwargs.block_kwargs            # upstream's D unless told
    # --freq-shift=out: D without the low-pass by default, inside the SSD wrapper too.
    desc, out = config.training_options(data='builtin:blobs32', freq_shift='out')
    assert out.D_kwargs.block_kwargs.resample_filter == [1] and desc.endswith('-out-dnoaa')
    assert config.advice(out) == []
    _, ssd = config.training_options(data='builtin:blobs32', cfg='ssd', freq_shift='out')
    assert ssd.D_kwargs.spatial_kwargs.block_kwargs.resample_filter == [1] and config.advice(ssd) == []
    # Asking for the anti-aliased D with the output shift is allowed, with the measured warning.
    desc, aa = config.training_options(data='builtin:blobs32', freq_shift='out', d_antialias=True)
    assert 'resample_filter' not in aa.D_kwargs.block_kwargs and not desc.endswith('dnoaa')
    assert config.advice(aa) == [config.OUT_SHIFT_WARNING]
    _, ssd_aa = config.training_options(data='builtin:blobs32', cfg='ssd', freq_shift='out', d_antialias=True)
    assert config.advice(ssd_aa) == [config.OUT_SHIFT_WARNING]
    desc, opened = config.training_options(data='builtin:blobs32', d_antialias=False)
    assert opened.D_kwargs.block_kwargs.resample_filter == [1] and desc.endswith('-dnoaa')
    _, fsg = config.training_options(data='builtin:blobs32', freq_shift='fsg16')
    assert 'resample_filter' not in fsg.D_kwargs.block_kwargs and config.advice(fsg) == []
    result = invoke([f'--outdir={tmp_path}', '--data=builtin:blobs32', '--freq-shift=out', '--dry-run'])
    assert result.exit_code == 0 and 'warning' not in result.output
    result = invoke([f'--outdir={tmp_path}', '--data=builtin:blobs32', '--freq-shift=out', '--d-antialias=1',
                     '--dry-run'])
    assert result.exit_code == 0 and config.OUT_SHIFT_WARNING in result.output


def test_what_an_unfiltered_discriminator_sees_near_nyquist():
    """The reason for --d-antialias=0: D's downsampling low-pass (FIR [1,3,3,1]) removes a carrier at
    (15,15)/32 almost entirely, so D's lower resolutions cannot tell it from its neighbours; without
    the filter the carrier reaches them as its alias at (1,1)/16."""
    from stylefreq.ops import upfirdn2d
    y, x = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing='ij')
    carrier = torch.cos(2 * torch.pi * 15 * (x + y) / 32)[None, None]
    fir = upfirdn2d.downsample2d(carrier, upfirdn2d.setup_filter([1, 3, 3, 1]))
    none = upfirdn2d.downsample2d(carrier, upfirdn2d.setup_filter([1]))
    assert fir.square().mean() < 1e-5 * carrier.square().mean()
    assert none.square().mean() == pytest.approx(carrier.square().mean(), rel=0.05)
    i, j = x[::2, ::2] / 2, y[::2, ::2] / 2                    # pixel indices of the 16 px grid
    alias = torch.cos(2 * torch.pi * (i + j) / 16)
    assert torch.allclose(none[0, 0], alias, atol=1e-4)       # (15,15)/32 seen at 16 px is (1,1)/16
