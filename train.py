"""Train a StyleGAN2-ADA-compatible GAN (same flags, run directories and files as upstream's train.py).

    python train.py --outdir=training-runs --data=~/datasets/mydata.zip --gpus=1
    python train.py --outdir=training-runs --data=builtin:blobs32 --kimg=1 --snap=1     # CPU demo
    python train.py --outdir=training-runs --resume=training-runs/00003-mydata-auto1    # continue a run

Multi-node: launch with torchrun (env:// rendezvous); every process trains one rank:
    torchrun --nnodes=2 --nproc-per-node=8 --rdzv-endpoint=HOST:PORT train.py --outdir=... --data=...
"""

import copy
import glob
import json
import os
import re
import sys
import tempfile

import click
import torch
import torch.distributed as dist

from stylefreq.checkpoint import CheckpointError, DownloadError
from stylefreq.kwargs import EasyDict
from training import training_loop, training_stats
from training.dataset import DatasetError


class UserError(Exception):
    pass


# Exact upstream presets (research/upstream.md section 1).
CFG_SPECS = {
    'auto':      dict(ref_gpus=-1, kimg=25000,  mb=-1, mbstd=-1, fmaps=-1,  lrate=-1,     gamma=-1,   ema=-1,  ramp=0.05, map=2),
    'stylegan2': dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  fmaps=1,   lrate=0.002,  gamma=10,   ema=10,  ramp=None, map=8),
    'paper256':  dict(ref_gpus=8,  kimg=25000,  mb=64, mbstd=8,  fmaps=0.5, lrate=0.0025, gamma=1,    ema=20,  ramp=None, map=8),
    'paper512':  dict(ref_gpus=8,  kimg=25000,  mb=64, mbstd=8,  fmaps=1,   lrate=0.0025, gamma=0.5,  ema=20,  ramp=None, map=8),
    'paper1024': dict(ref_gpus=8,  kimg=25000,  mb=32, mbstd=4,  fmaps=1,   lrate=0.002,  gamma=2,    ema=10,  ramp=None, map=8),
    'cifar':     dict(ref_gpus=2,  kimg=100000, mb=64, mbstd=32, fmaps=1,   lrate=0.0025, gamma=0.01, ema=500, ramp=0.05, map=2),
    # stylefreq: auto's hyper-parameters plus SSD-GAN's spectral discriminator branch (see --ssd).
    'ssd':       dict(ref_gpus=-1, kimg=25000,  mb=-1, mbstd=-1, fmaps=-1,  lrate=-1,     gamma=-1,   ema=-1,  ramp=0.05, map=2),
}

_CDN = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/'
RESUME_SPECS = {
    'ffhq256': _CDN + 'ffhq-res256-mirror-paper256-noaug.pkl',
    'ffhq512': _CDN + 'ffhq-res512-mirror-stylegan2-noaug.pkl',
    'ffhq1024': _CDN + 'ffhq-res1024-mirror-stylegan2-noaug.pkl',
    'celebahq256': _CDN + 'celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl',
    'lsundog256': _CDN + 'lsundog-res256-paper256-kimg100000-noaug.pkl',
}


def _metric_registry():
    try:
        from metrics import metric_main
    except ImportError:
        return None
    return metric_main


def setup_training_loop_kwargs(gpus=None, snap=None, metrics=None, seed=None, data=None, cond=None, subset=None,
                               mirror=None, cfg=None, gamma=None, kimg=None, batch=None, aug=None, p=None, target=None,
                               augpipe=None, resume=None, freezed=None, fp32=None, nhwc=None, allow_tf32=None,
                               nobench=None, workers=None, cbase=None, cmax=None, map=None, mbstd_group=None,
                               freq_shift=None, ssd=None, ssd_lambda=None, ssd_mode=None):
    """Flags -> (run description, training_loop kwargs), with upstream's defaults and checks."""
    args = EasyDict()

    gpus = 1 if gpus is None else gpus
    if not (gpus >= 1 and gpus & (gpus - 1) == 0):
        raise UserError('--gpus must be a power of two')
    args.num_gpus = gpus

    snap = 50 if snap is None else snap
    if snap < 1:
        raise UserError('--snap must be at least 1')
    args.image_snapshot_ticks = args.network_snapshot_ticks = snap

    metrics = [] if metrics is None else metrics
    registry = _metric_registry()
    for metric in metrics:
        if registry is None or not registry.is_valid_metric(metric):
            valid = registry.list_valid_metrics() if registry is not None else []
            raise UserError(f'--metrics: unknown metric {metric!r}; valid: {", ".join(valid) or "none available"}')
    args.metrics = metrics

    args.random_seed = 0 if seed is None else seed

    if data is None:
        raise UserError('--data is required')
    args.training_set_kwargs = EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels='auto',
                                        max_size=None, xflip=False)
    args.data_loader_kwargs = EasyDict(pin_memory=torch.cuda.is_available(), num_workers=3, prefetch_factor=2)
    try:
        from training.dataset import ImageFolderDataset
        training_set = ImageFolderDataset(**{k: v for k, v in args.training_set_kwargs.items() if k != 'class_name'})
        args.training_set_kwargs.resolution = training_set.resolution
        args.training_set_kwargs.use_labels = training_set.has_labels
        args.training_set_kwargs.max_size = len(training_set)
        desc = training_set.name
        data_channels = training_set.num_channels
        del training_set
    except (OSError, ValueError) as err:
        raise UserError(f'--data: {err}') from None

    if cond:
        if not args.training_set_kwargs.use_labels:
            raise UserError('--cond=True requires labels specified in dataset.json')
        desc += '-cond'
    else:
        args.training_set_kwargs.use_labels = False

    if subset is not None:
        if not 1 <= subset <= args.training_set_kwargs.max_size:
            raise UserError(f'--subset must be between 1 and {args.training_set_kwargs.max_size}')
        desc += f'-subset{subset}'
        if subset < args.training_set_kwargs.max_size:
            args.training_set_kwargs.max_size = subset
            args.training_set_kwargs.random_seed = args.random_seed

    if mirror:
        desc += '-mirror'
        args.training_set_kwargs.xflip = True

    cfg = 'auto' if cfg is None else cfg
    desc += f'-{cfg}'
    spec = EasyDict(CFG_SPECS[cfg])
    if cfg in ('auto', 'ssd'):
        desc += f'{gpus:d}'
        spec.ref_gpus = gpus
        res = args.training_set_kwargs.resolution
        spec.mb = max(min(gpus * min(4096 // res, 32), 64), gpus)
        spec.mbstd = min(spec.mb // gpus, 4)
        spec.fmaps = 1 if res >= 512 else 0.5
        spec.lrate = 0.002 if res >= 1024 else 0.0025
        spec.gamma = 0.0002 * (res ** 2) / spec.mb
        spec.ema = spec.mb * 10 / 32

    args.G_kwargs = EasyDict(class_name='training.networks.Generator', z_dim=512, w_dim=512,
                             mapping_kwargs=EasyDict(), synthesis_kwargs=EasyDict())
    args.D_kwargs = EasyDict(class_name='training.networks.Discriminator', block_kwargs=EasyDict(),
                             mapping_kwargs=EasyDict(), epilogue_kwargs=EasyDict())
    args.G_kwargs.synthesis_kwargs.channel_base = args.D_kwargs.channel_base = int(spec.fmaps * 32768)
    args.G_kwargs.synthesis_kwargs.channel_max = args.D_kwargs.channel_max = 512
    args.G_kwargs.mapping_kwargs.num_layers = spec.map
    args.G_kwargs.synthesis_kwargs.num_fp16_res = args.D_kwargs.num_fp16_res = 4
    args.G_kwargs.synthesis_kwargs.conv_clamp = args.D_kwargs.conv_clamp = 256
    args.D_kwargs.epilogue_kwargs.mbstd_group_size = spec.mbstd
    # Capacity overrides (StyleGAN3's flag names): small networks for CPU runs and quick studies.
    if cbase is not None:
        if cbase < 1:
            raise UserError('--cbase must be at least 1')
        args.G_kwargs.synthesis_kwargs.channel_base = args.D_kwargs.channel_base = cbase
    if cmax is not None:
        if cmax < 1:
            raise UserError('--cmax must be at least 1')
        args.G_kwargs.synthesis_kwargs.channel_max = args.D_kwargs.channel_max = cmax
    res = args.training_set_kwargs.resolution
    if min(args.D_kwargs.channel_base // res, args.D_kwargs.channel_max) < 1:
        raise UserError(f'--cbase={args.D_kwargs.channel_base} leaves no channels at {res}x{res}; '
                        f'use at least {res}')
    if map is not None:
        if map < 1:
            raise UserError('--map must be at least 1')
        args.G_kwargs.mapping_kwargs.num_layers = map
    if mbstd_group is not None:
        if mbstd_group < 1:
            raise UserError('--mbstd-group must be at least 1')
        args.D_kwargs.epilogue_kwargs.mbstd_group_size = mbstd_group

    args.G_opt_kwargs = EasyDict(class_name='torch.optim.Adam', lr=spec.lrate, betas=[0, 0.99], eps=1e-8)
    args.D_opt_kwargs = EasyDict(class_name='torch.optim.Adam', lr=spec.lrate, betas=[0, 0.99], eps=1e-8)
    args.loss_kwargs = EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=spec.gamma)
    args.total_kimg = spec.kimg
    args.batch_size = spec.mb
    args.batch_gpu = spec.mb // spec.ref_gpus
    args.ema_kimg = spec.ema
    args.ema_rampup = spec.ramp
    if cfg == 'cifar':
        args.loss_kwargs.pl_weight = 0
        args.loss_kwargs.style_mixing_prob = 0
        args.D_kwargs.architecture = 'orig'

    if gamma is not None:
        if not gamma >= 0:
            raise UserError('--gamma must be non-negative')
        desc += f'-gamma{gamma:g}'
        args.loss_kwargs.r1_gamma = gamma
    if kimg is not None:
        if not kimg >= 1:
            raise UserError('--kimg must be at least 1')
        desc += f'-kimg{kimg:d}'
        args.total_kimg = kimg
    if batch is not None:
        if not (batch >= 1 and batch % gpus == 0):
            raise UserError('--batch must be at least 1 and divisible by --gpus')
        desc += f'-batch{batch}'
        args.batch_size = batch
        args.batch_gpu = batch // gpus
    if args.batch_gpu < 1 or args.batch_size % (args.batch_gpu * gpus) != 0:
        raise UserError(f'--cfg={cfg} gives {args.batch_gpu} images per GPU for --gpus={gpus}; set --batch')
    mbstd = args.D_kwargs.epilogue_kwargs.mbstd_group_size
    if mbstd is not None and args.batch_gpu % min(mbstd, args.batch_gpu) != 0:
        raise UserError(f'the per-GPU batch ({args.batch_gpu}) must be divisible by the minibatch-std group size '
                        f'({mbstd}); change --batch')

    if aug is None:
        aug = 'ada'
    else:
        desc += f'-{aug}'
    if aug == 'ada':
        args.ada_target = 0.6
    elif aug == 'fixed' and p is None:
        raise UserError(f'--aug={aug} requires specifying --p')
    if p is not None:
        if aug != 'fixed':
            raise UserError('--p can only be specified with --aug=fixed')
        if not 0 <= p <= 1:
            raise UserError('--p must be between 0 and 1')
        desc += f'-p{p:g}'
        args.augment_p = p
    if target is not None:
        if aug != 'ada':
            raise UserError('--target can only be specified with --aug=ada')
        if not 0 <= target <= 1:
            raise UserError('--target must be between 0 and 1')
        desc += f'-target{target:g}'
        args.ada_target = target
    if augpipe is None:
        augpipe = 'bgc'
    else:
        if aug == 'noaug':
            raise UserError('--augpipe cannot be specified with --aug=noaug')
        desc += f'-{augpipe}'
    if aug != 'noaug':
        from training.augment import augpipe_specs
        args.augment_kwargs = EasyDict(class_name='training.augment.AugmentPipe', **augpipe_specs[augpipe])

    if resume is None or resume == 'noresume':
        if resume == 'noresume':
            desc += '-noresume'
    elif resume in RESUME_SPECS:
        desc += f'-resume{resume}'
        args.resume_pkl = RESUME_SPECS[resume]
    else:
        desc += '-resumecustom'
        args.resume_pkl = resume
    if resume not in (None, 'noresume'):
        args.ada_kimg = 100          # let ADA react faster at the start of a transfer
        args.ema_rampup = None

    if freezed is not None:
        if not freezed >= 0:
            raise UserError('--freezed must be non-negative')
        desc += f'-freezed{freezed:d}'
        args.D_kwargs.block_kwargs.freeze_layers = freezed

    if fp32:
        args.G_kwargs.synthesis_kwargs.num_fp16_res = args.D_kwargs.num_fp16_res = 0
        args.G_kwargs.synthesis_kwargs.conv_clamp = args.D_kwargs.conv_clamp = None
    if nhwc:
        args.G_kwargs.synthesis_kwargs.fp16_channels_last = args.D_kwargs.block_kwargs.fp16_channels_last = True
    # SSD-GAN's spectral branch wraps the discriminator built above (stylefreq.ssd; research/ssdgan.md).
    # It is on with --cfg=ssd, with --ssd=1 on any --cfg, or when --ssd-lambda / --ssd-mode is given.
    use_ssd = cfg == 'ssd' or bool(ssd) or ssd_lambda is not None or ssd_mode is not None
    if use_ssd:
        if ssd is not None and not ssd:
            raise UserError('--ssd=0 contradicts --cfg=ssd, --ssd-lambda and --ssd-mode')
        if ssd_lambda is not None and not 0 < ssd_lambda <= 1:
            raise UserError('--ssd-lambda must be in (0, 1]')
        if data_channels not in (1, 3):
            raise UserError(f'--ssd needs grayscale or RGB images; the dataset has {data_channels} channels')
        if args.training_set_kwargs.resolution < 8:
            raise UserError('--ssd needs a resolution of at least 8 (for the radial spectrum)')
        desc += '' if cfg == 'ssd' else '-ssd'
        desc += '-ssdjoint' if ssd_mode == 'joint' else ''
        desc += '' if ssd_lambda is None else f'-ssdlambda{ssd_lambda:g}'
        args.D_kwargs = EasyDict(class_name='stylefreq.ssd.SSDDiscriminator', spatial_kwargs=args.D_kwargs,
                                 mode=ssd_mode or 'official', ssd_lambda=0.5 if ssd_lambda is None else ssd_lambda)
    if nobench:
        args.cudnn_benchmark = False
    if allow_tf32:
        args.allow_tf32 = True
    if workers is not None:
        if not workers >= 0:
            raise UserError('--workers must be non-negative')
        args.data_loader_kwargs.num_workers = workers
    if args.data_loader_kwargs.num_workers == 0:
        args.data_loader_kwargs.pop('prefetch_factor')

    # Frequency-shifted synthesis wraps whatever generator the flags above built, so it composes
    # with every --cfg (stylefreq.freqshift; research/freqbias.md section 1).
    if freq_shift is not None:
        from stylefreq import freqshift
        try:
            fs_spec = freqshift.parse_freq_shift(freq_shift)
        except ValueError as err:
            raise UserError(f'--freq-shift: {err}') from None
        if fs_spec is not None:
            if fs_spec['mode'] != 'out' and args.training_set_kwargs.resolution < 16:
                raise UserError(f'--freq-shift={freq_shift} needs a resolution of at least 16 (its branches '
                                f'start from the R/4 feature map)')
            desc += f'-{freqshift.freq_shift_desc(freq_shift)}'
            args.G_kwargs = freqshift.freq_shift_G_kwargs(args.G_kwargs, **fs_spec)
    return desc, args


def find_latest_snapshot(run_dir):
    snapshots = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))
    return snapshots[-1] if snapshots else None


def continue_run(run_dir, kimg=None):
    """Options to continue the run in `run_dir` from its latest snapshot, in the same directory."""
    options_file = os.path.join(run_dir, 'training_options.json')
    if not os.path.isfile(options_file):
        raise UserError(f'--resume: {run_dir} is a directory but not a run directory (no training_options.json)')
    with open(options_file) as f:
        args = json.load(f, object_hook=EasyDict)
    snapshot = find_latest_snapshot(run_dir)
    if snapshot is None:
        raise UserError(f'--resume: {run_dir} has no network-snapshot-*.pkl to continue from')
    args.resume_pkl = snapshot
    args.run_dir = run_dir
    if kimg is not None:
        args.total_kimg = kimg
    return args


def remove_partial_files(run_dir):
    """Delete what a process killed mid-write leaves: snapshot and image-grid temp files."""
    partial = glob.glob(os.path.join(run_dir, '.network-snapshot-*.tmp')) + glob.glob(os.path.join(run_dir, '*.tmp.png'))
    for path in partial:
        print(f'Removing {os.path.basename(path)} (left by an interrupted write)')
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _one_sentence(err):
    """The message of `err`; for an error re-raised from a DataLoader worker, the original one."""
    text = str(err).strip()
    if 'Original Traceback' in text:
        last = text.splitlines()[-1]
        text = last.split(': ', 1)[1] if ': ' in last else last
    return text


def next_run_dir(outdir, desc):
    prev = [x for x in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, x))] if os.path.isdir(outdir) else []
    ids = [int(m.group()) for m in (re.match(r'^\d+', x) for x in prev) if m is not None]
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')


class Logger:
    """Copies everything written to stdout/stderr into log.txt (appending)."""

    def __init__(self, file_name):
        self.file = open(file_name, 'a')
        self.stdout, self.stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(self.stdout, self.file), _Tee(self.stderr, self.file)


class _Tee:
    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)
        self.file.flush()

    def flush(self):
        self.stream.flush()
        self.file.flush()

    def isatty(self):
        return False


def _threads_per_process(num_procs):
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_procs))


def subprocess_fn(rank, args, temp_dir):
    """One training process of a single-node run (rank = local GPU index, or CPU process index)."""
    if rank == 0:
        Logger(os.path.join(args.run_dir, 'log.txt'))
    _threads_per_process(args.num_gpus)
    if args.num_gpus > 1:
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        if torch.cuda.is_available():
            torch.cuda.set_device(rank)
        dist.init_process_group(backend=backend, init_method=f'file://{init_file}', rank=rank,
                                world_size=args.num_gpus)
    try:
        training_loop.training_loop(rank=rank, **args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(args):
    """Run the training loop: one process, `--gpus` spawned processes, or this torchrun rank."""
    if 'RANK' in os.environ and 'WORLD_SIZE' in os.environ and dist.is_initialized():
        rank = dist.get_rank()
        if rank == 0:
            Logger(os.path.join(args.run_dir, 'log.txt'))
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
        device = torch.device('cuda', local_rank) if torch.cuda.is_available() else torch.device('cpu')
        _threads_per_process(int(os.environ.get('LOCAL_WORLD_SIZE', 1)))
        try:
            training_loop.training_loop(rank=rank, device=device, **args)
        finally:
            dist.destroy_process_group()
        return
    with tempfile.TemporaryDirectory() as temp_dir:
        if args.num_gpus == 1:
            subprocess_fn(rank=0, args=args, temp_dir=temp_dir)
        else:
            torch.multiprocessing.spawn(fn=subprocess_fn, args=(args, temp_dir), nprocs=args.num_gpus)


class CommaSeparatedList(click.ParamType):
    name = 'list'

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        if value is None or value.lower() == 'none' or value == '':
            return []
        return value.split(',')


@click.command()
@click.pass_context
@click.option('--outdir', help='Where to save the results', required=True, metavar='DIR')
@click.option('--gpus', help='Number of GPUs (or CPU processes without CUDA) [default: 1]', type=int, metavar='INT')
@click.option('--snap', help='Snapshot interval [default: 50 ticks]', type=int, metavar='INT')
@click.option('--metrics', help='Comma-separated list or "none" [default: none]', type=CommaSeparatedList())
@click.option('--seed', help='Random seed [default: 0]', type=int, metavar='INT')
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
@click.option('--data', help='Training data (directory, zip, or builtin:NAME)', metavar='PATH')
@click.option('--cond', help='Train conditional model based on dataset labels [default: false]', type=bool, metavar='BOOL')
@click.option('--subset', help='Train with only N images [default: all]', type=int, metavar='INT')
@click.option('--mirror', help='Enable dataset x-flips [default: false]', type=bool, metavar='BOOL')
@click.option('--cfg', help='Base config [default: auto]', type=click.Choice(list(CFG_SPECS)))
@click.option('--gamma', help='Override R1 gamma', type=float)
@click.option('--kimg', help='Override training duration', type=int, metavar='INT')
@click.option('--batch', help='Override batch size', type=int, metavar='INT')
@click.option('--aug', help='Augmentation mode [default: ada]', type=click.Choice(['noaug', 'ada', 'fixed']))
@click.option('--p', help='Augmentation probability for --aug=fixed', type=float)
@click.option('--target', help='ADA target value for --aug=ada', type=float)
@click.option('--augpipe', help='Augmentation pipeline [default: bgc]',
              type=click.Choice(['blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc']))
@click.option('--resume', help='Resume from a pickle, URL, name (ffhq256, ...) or run directory [default: noresume]', metavar='PKL|DIR')
@click.option('--freezed', help='Freeze-D [default: 0 layers]', type=int, metavar='INT')
@click.option('--fp32', help='Disable mixed-precision training', type=bool, metavar='BOOL')
@click.option('--nhwc', help='Use NHWC memory format with FP16', type=bool, metavar='BOOL')
@click.option('--nobench', help='Disable cuDNN benchmarking', type=bool, metavar='BOOL')
@click.option('--allow-tf32', help='Allow PyTorch to use TF32 internally', type=bool, metavar='BOOL')
@click.option('--workers', help='Override number of DataLoader workers [default: 3]', type=int, metavar='INT')
@click.option('--cbase', help='Capacity multiplier (channel_base) [default: from --cfg]', type=int, metavar='INT')
@click.option('--cmax', help='Max. feature maps (channel_max) [default: 512]', type=int, metavar='INT')
@click.option('--map', help='Mapping network depth [default: from --cfg]', type=int, metavar='INT')
@click.option('--mbstd-group', help='Minibatch std group size [default: from --cfg]', type=int, metavar='INT')
@click.option('--ssd', help='Add the SSD-GAN spectral discriminator branch [default: true for --cfg=ssd]',
              type=bool, metavar='BOOL')
@click.option('--ssd-lambda', help='SSD weight of the spatial logit, in (0, 1] [default: 0.5]', type=float,
              metavar='FLOAT')
@click.option('--ssd-mode', help='SSD mode: official (stop-gradient C) or joint [default: official]',
              type=click.Choice(['official', 'joint']))
@click.option('--freq-shift', help='Frequency-shifted synthesis: none, out, fsg16, noshift16, learn16 or carriers '
              'u,v;u,v in cycles/pixel, e.g. 1/16,0;0,1/16 [default: none]', metavar='SPEC')
def main(ctx, outdir, dry_run, **config_kwargs):
    """Train a StyleGAN2-ADA-compatible GAN.

    \b
    Base configs (--cfg): auto, stylegan2, paper256, paper512, paper1024, cifar (as upstream);
    ssd = auto plus the SSD-GAN spectral discriminator branch, which --ssd=1 (or --ssd-lambda,
    --ssd-mode) adds to any other --cfg.
    --resume=<run dir> continues that run in place from its latest snapshot: images seen, tick,
    ADA p and optimizer state carry over (other flags are taken from its training_options.json,
    except --kimg).
    """
    torchrun = 'RANK' in os.environ and 'WORLD_SIZE' in os.environ and not dry_run
    if torchrun:
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        dist.init_process_group(backend=backend, init_method='env://')
    rank = dist.get_rank() if torchrun else 0

    resume = config_kwargs.get('resume')
    try:
        if resume is not None and os.path.isdir(resume):
            args = continue_run(resume, kimg=config_kwargs.get('kimg'))
            run_desc = None
        else:
            if config_kwargs.get('data') is None:
                raise UserError('--data is required (unless --resume names a run directory)')
            run_desc, args = setup_training_loop_kwargs(**config_kwargs)
    except UserError as err:
        ctx.fail(str(err))
    if torchrun:
        if config_kwargs.get('gpus') not in (None, dist.get_world_size()):
            ctx.fail(f'--gpus={config_kwargs["gpus"]} disagrees with torchrun\'s world size {dist.get_world_size()}')
        args.num_gpus = dist.get_world_size()
        if run_desc is not None and args.batch_size % args.num_gpus != 0:
            ctx.fail(f'the batch ({args.batch_size}) must be divisible by the world size ({args.num_gpus}); set --batch')
        if run_desc is not None and config_kwargs.get('batch') is None and args.batch_gpu * args.num_gpus > args.batch_size:
            args.batch_gpu = args.batch_size // args.num_gpus

    if run_desc is not None:
        run_dir = [next_run_dir(outdir, run_desc) if rank == 0 else None]
        if torchrun:
            dist.broadcast_object_list(run_dir, src=0)
        args.run_dir = run_dir[0]

    if rank == 0:
        print()
        print('Training options:')
        print(json.dumps(args, indent=2))
        print()
        print(f'Output directory:   {args.run_dir}')
        print(f'Training data:      {args.training_set_kwargs.path}')
        print(f'Training duration:  {args.total_kimg} kimg')
        print(f'Number of GPUs:     {args.num_gpus}')
        print(f'Number of images:   {args.training_set_kwargs.max_size}')
        print(f'Image resolution:   {args.training_set_kwargs.resolution}')
        print(f'Conditional model:  {args.training_set_kwargs.use_labels}')
        print(f'Dataset x-flips:    {args.training_set_kwargs.xflip}')
        print()
    if dry_run:
        print('Dry run; exiting.')
        return

    if rank == 0 and run_desc is not None:
        print('Creating output directory...')
        os.makedirs(args.run_dir)
        with open(os.path.join(args.run_dir, 'training_options.json'), 'wt') as f:
            json.dump(args, f, indent=2)
    elif rank == 0:
        print(f'Continuing {args.run_dir} from {os.path.basename(args.resume_pkl)}...')
        remove_partial_files(args.run_dir)
    if torchrun:
        dist.barrier()

    if rank == 0:
        print('Launching processes...')
    if not torchrun and args.num_gpus > 1:
        torch.multiprocessing.set_start_method('spawn', force=True)
    try:
        launch(copy.deepcopy(args))
    except (DatasetError, CheckpointError, DownloadError, training_loop.ResumeError) as err:
        # Bad data or checkpoint met during training: one sentence, also in log.txt (stderr is teed).
        raise click.ClickException(_one_sentence(err)) from None


if __name__ == '__main__':
    main()
