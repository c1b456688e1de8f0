"""train.py's flags -> the training options (training_options.json) and the run's name.

`training_options(**flags)` returns `(desc, options)`: the run description (the run directory's name
without its number) and an EasyDict of JSON values, the keyword arguments of
`training_loop.training_loop`. Keys, values and their order are upstream's
, so an options file reads the same in both projects:

    num_gpus, image_snapshot_ticks, network_snapshot_ticks, metrics, random_seed,
    training_set_kwargs, data_loader_kwargs, G_kwargs, D_kwargs, G_opt_kwargs, D_opt_kwargs,
    loss_kwargs, total_kimg, batch_size, batch_gpu, ema_kimg, ema_rampup, [ada_target],
    [augment_p], [augment_kwargs], [resume_pkl, ada_kimg | resume_progress], [cudnn_benchmark],
    [allow_tf32], [spectral_monitor]                  (+ run_dir, added by `run_directory`)

Each concern is one function below, applied in that order: processes, data, preset, capacity,
augmentation, resume, Freeze-D, performance, then the SSD / frequency-shift features
(`stylefreq.features`, shared with the patched upstream checkout). Each adds its part of the run
name to `name`, a list joined with '-' at the end. Flags are None when not given.
`continued_run_options` is `--resume=<run dir>`: that run's own options, continued in place.
Every refusal is a UserError: one sentence naming the flag or file, raised before anything is
written.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import torch

from metrics import metric_main
from stylefreq import distributed, features
from stylefreq.kwargs import EasyDict
from training import augment, resume
from training.dataset import DatasetError, ImageFolderDataset


class UserError(Exception):
    """Bad command-line input; the message is one sentence naming the flag or file."""


def _require(condition, message):
    if not condition:
        raise UserError(message)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A --cfg column of upstream's table. None marks what `auto` derives from resolution and GPUs."""
    ref_gpus: int | None
    kimg: int
    mb: int | None
    mbstd: int | None
    fmaps: float | None
    lrate: float | None
    gamma: float | None
    ema: float | None
    ramp: float | None
    map: int


_AUTO = Preset(None, 25000, None, None, None, None, None, None, 0.05, 2)
PRESETS = {
    'auto': _AUTO,
    'stylegan2': Preset(8, 25000, 32, 4, 1, 0.002, 10, 10, None, 8),
    'paper256': Preset(8, 25000, 64, 8, 0.5, 0.0025, 1, 20, None, 8),
    'paper512': Preset(8, 25000, 64, 8, 1, 0.0025, 0.5, 20, None, 8),
    'paper1024': Preset(8, 25000, 32, 4, 1, 0.002, 2, 10, None, 8),
    'cifar': Preset(2, 100000, 64, 32, 1, 0.0025, 0.01, 500, 0.05, 2),
    'ssd': _AUTO,                       # auto's numbers; the SSD-GAN branch comes from features
}
AUG_MODES = ('noaug', 'ada', 'fixed')
DEFAULT_SNAP = 50
DEFAULT_ADA_TARGET = 0.6
MAX_SEED = 2 ** 31 - 1


def _power_of_two(n) -> bool:
    return isinstance(n, int) and n >= 1 and n & (n - 1) == 0


def _integer(value, low, flag):
    """An int >= low (bools are not counts)."""
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= low,
             f'{flag} must be an integer of at least {low}')
    return value


def _fraction(value, low, high, message):
    """A finite float in [low, high]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    _require(math.isfinite(number) and low <= number <= high, message)
    return number


# ---------------------------------------------------------------------------------------------------
# Concerns.

def process_count(gpus=None) -> int:
    """Processes the run will have: torchrun's world when started by torchrun, else --gpus (1)."""
    try:
        world = distributed.torchrun_world()
    except RuntimeError as err:
        raise UserError(str(err)) from None
    if world is None:
        count = 1 if gpus is None else gpus
        _require(_power_of_two(count), '--gpus must be a power of two')
        return count
    size = world[1]
    _require(gpus in (None, size), f'--gpus={gpus} does not match the {size} processes torchrun started; '
                                   f'leave --gpus out under torchrun')
    _require(_power_of_two(size), f'torchrun started {size} processes, but like --gpus the number of processes '
                                  f'must be a power of two')
    return size


def _metrics(names) -> list:
    names = [] if names is None else list(names)
    for name in names:
        _require(metric_main.is_valid_metric(name),
                 f'--metrics: unknown metric {name!r}; valid: {metric_main.describe_valid_metrics()}')
    return names


def _general(options, num_gpus, snap, metrics, seed):
    seed = 0 if seed is None else seed
    _require(isinstance(seed, int) and 0 <= seed <= MAX_SEED, f'--seed must be an integer between 0 and {MAX_SEED}')
    options.num_gpus = num_gpus
    options.image_snapshot_ticks = options.network_snapshot_ticks = \
        DEFAULT_SNAP if snap is None else _integer(snap, 1, '--snap')
    options.metrics = _metrics(metrics)
    options.random_seed = seed


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the dataset told us when it was opened."""
    path: str
    name: str
    resolution: int
    channels: int

    @property
    def shape(self):
        return [self.channels, self.resolution, self.resolution]


def _data(options, name, data, cond, subset, mirror) -> DataFacts:
    """training_set_kwargs and data_loader_kwargs. Opening the dataset once checks what is cheap (the
    first image's size and channels, every label) before any run directory exists."""
    _require(data is not None, '--data is required (unless --resume names a run directory)')
    path = os.fspath(data)
    try:
        dataset = ImageFolderDataset(path=path, use_labels='auto')
        try:
            facts = DataFacts(path=path, name=dataset.name, resolution=dataset.resolution,
                              channels=dataset.num_channels)
            count, labelled = len(dataset), dataset.has_labels
        finally:
            dataset.close()
    except DatasetError as err:
        raise UserError(f'--data: {err}') from None

    kwargs = EasyDict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=False,
                      max_size=count, xflip=False, resolution=facts.resolution)
    name.append(facts.name)
    if cond:
        _require(labelled, '--cond=True requires labels specified in dataset.json')
        kwargs.use_labels = True
        name.append('cond')
    if subset is not None:
        _require(isinstance(subset, int) and 1 <= subset <= count, f'--subset must be between 1 and {count}')
        name.append(f'subset{subset}')
        if subset < count:                  # a subset of everything is everything (no draw)
            kwargs.update(max_size=subset, random_seed=options.random_seed)
    if mirror:
        kwargs.xflip = True
        name.append('mirror')
    options.training_set_kwargs = kwargs
    options.data_loader_kwargs = EasyDict(pin_memory=torch.cuda.is_available(), num_workers=3, prefetch_factor=2)
    return facts


def _auto_preset(resolution, gpus) -> Preset:
    """auto's column for this resolution and number of GPUs (upstream's formulas)."""
    mb = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return dataclasses.replace(_AUTO, ref_gpus=gpus, mb=mb, mbstd=min(mb // gpus, 4),
                               fmaps=1 if resolution >= 512 else 0.5, lrate=0.002 if resolution >= 1024 else 0.0025,
                               gamma=0.0002 * resolution ** 2 / mb, ema=mb * 10 / 32)


def _preset(options, name, cfg, resolution, gamma, kimg, batch) -> str:
    """Networks, optimizers, loss and schedule from the --cfg table, then --gamma, --kimg, --batch."""
    cfg = 'auto' if cfg is None else cfg
    _require(cfg in PRESETS, f'--cfg must be one of {", ".join(PRESETS)}, got {cfg!r}')
    gpus = options.num_gpus
    spec = _auto_preset(resolution, gpus) if PRESETS[cfg] is _AUTO else PRESETS[cfg]
    name.append(f'{cfg}{gpus}' if PRESETS[cfg] is _AUTO else cfg)

    width = int(spec.fmaps * 32768)
    options.G_kwargs = EasyDict(class_name='training.networks.Generator', z_dim=512, w_dim=512,
                                mapping_kwargs=EasyDict(num_layers=spec.map),
                                synthesis_kwargs=EasyDict(channel_base=width, channel_max=512, num_fp16_res=4,
                                                          conv_clamp=256))
    options.D_kwargs = EasyDict(class_name='training.networks.Discriminator', block_kwargs=EasyDict(),
                                mapping_kwargs=EasyDict(), epilogue_kwargs=EasyDict(mbstd_group_size=spec.mbstd),
                                channel_base=width, channel_max=512, num_fp16_res=4, conv_clamp=256)
    for key in ('G_opt_kwargs', 'D_opt_kwargs'):
        options[key] = EasyDict(class_name='torch.optim.Adam', lr=spec.lrate, betas=[0, 0.99], eps=1e-8)
    options.loss_kwargs = EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=spec.gamma)
    options.update(total_kimg=spec.kimg, batch_size=spec.mb, batch_gpu=spec.mb // spec.ref_gpus, ema_kimg=spec.ema,
                   ema_rampup=spec.ramp)
    if cfg == 'cifar':
        options.loss_kwargs.update(pl_weight=0, style_mixing_prob=0)
        options.D_kwargs.architecture = 'orig'

    if gamma is not None:
        options.loss_kwargs.r1_gamma = _fraction(gamma, 0, math.inf, '--gamma must be a finite number >= 0')
        name.append(f'gamma{options.loss_kwargs.r1_gamma:g}')
    if kimg is not None:
        options.total_kimg = _integer(kimg, 1, '--kimg')
        name.append(f'kimg{kimg:d}')
    if batch is None:
        _require(options.batch_size % (options.batch_gpu * gpus) == 0,
                 f'--cfg={cfg} puts {options.batch_gpu} of its {options.batch_size} images on each of '
                 f'{spec.ref_gpus} GPUs, which does not divide among {gpus}; set --batch')
    else:
        _require(isinstance(batch, int) and batch >= 1 and batch % gpus == 0,
                 '--batch must be at least 1 and divisible by --gpus')
        options.update(batch_size=batch, batch_gpu=batch // gpus)
        name.append(f'batch{batch}')
    return cfg


def _capacity(options, resolution, cbase, cmax, map, mbstd_group):
    """StyleGAN3's capacity flags, applied to the preset's G and D alike."""
    G, D = options.G_kwargs, options.D_kwargs
    if cbase is not None:
        G.synthesis_kwargs.channel_base = D.channel_base = _integer(cbase, 1, '--cbase')
    if cmax is not None:
        G.synthesis_kwargs.channel_max = D.channel_max = _integer(cmax, 1, '--cmax')
    if map is not None:
        G.mapping_kwargs.num_layers = _integer(map, 1, '--map')
    if mbstd_group is not None:
        D.epilogue_kwargs.mbstd_group_size = _integer(mbstd_group, 1, '--mbstd-group')
    _require(D.channel_base >= resolution,
             f'--cbase={D.channel_base} leaves no channels at {resolution}x{resolution}; use at least {resolution}')
    # The minibatch-std layer splits what D sees at once (batch_gpu images) into equal groups.
    group = D.epilogue_kwargs.mbstd_group_size
    _require(options.batch_gpu % min(group, options.batch_gpu) == 0,
             f'the per-GPU batch ({options.batch_gpu}) is not a multiple of the minibatch-std group size ({group}); '
             f'change --batch or --mbstd-group')


def _augmentation(options, name, aug, p, target, augpipe):
    mode = 'ada' if aug is None else aug
    _require(mode in AUG_MODES, f'--aug must be one of {", ".join(AUG_MODES)}, got {aug!r}')
    # --p tunes --aug=fixed only, --target --aug=ada only, --augpipe every mode that augments.
    for flag, value, owner in (('--p', p, 'fixed'), ('--target', target, 'ada')):
        _require(value is None or mode == owner, f'{flag} can only be specified with --aug={owner}')
    _require(augpipe is None or mode != 'noaug', '--augpipe cannot be specified with --aug=noaug')
    _require(mode != 'fixed' or p is not None, '--aug=fixed requires specifying --p')
    pipe = 'bgc' if augpipe is None else augpipe
    _require(pipe in augment.augpipe_specs, f'--augpipe must be one of {", ".join(augment.augpipe_specs)}, '
                                            f'got {augpipe!r}')

    if mode == 'ada':
        options.ada_target = DEFAULT_ADA_TARGET if target is None else \
            _fraction(target, 0, 1, '--target must be between 0 and 1')
    if p is not None:
        options.augment_p = _fraction(p, 0, 1, '--p must be between 0 and 1')
    if mode != 'noaug':
        options.augment_kwargs = EasyDict(class_name='training.augment.AugmentPipe', **augment.augpipe_specs[pipe])
    name += [part for part in (aug,
                               None if p is None else f'p{options.augment_p:g}',
                               None if target is None else f'target{options.ada_target:g}',
                               augpipe) if part is not None]


def _resume(options, name, spec, facts: DataFacts):
    """--resume of a name, URL or snapshot file: fine-tune from its weights, or continue a stylefreq
    snapshot of the same dataset (its progress carries over into the new run directory)."""
    if spec in (None, 'noresume'):
        name += [] if spec is None else ['noresume']
        return
    try:
        source = resume.classify(spec)
        if source.kind == 'run_dir':
            resume.latest_snapshot(source.location)     # says what is wrong with the directory, if anything
            raise UserError(f'--resume={spec} is a run directory: it is continued in place '
                            f'(training.config.continued_run_options), not started anew')
        progress = None
        if source.kind == 'file':
            snapshot = resume.load_snapshot(source.location)
            resume.check_image_shape(snapshot, spec, facts.shape)
            if resume.same_dataset((snapshot.get('training_set_kwargs') or {}).get('path'), facts.path):
                progress = resume.resumable_progress(snapshot)
    except resume.ResumeError as err:
        raise UserError(str(err)) from None
    options.resume_pkl = source.location
    if progress is None:                 # fine-tuning from weights, as upstream
        options.ada_kimg = resume.FINETUNE_ADA_KIMG
        options.ema_rampup = None
    else:                                # the same run, continued in a new directory
        options.resume_progress = True
    name.append(source.suffix.lstrip('-'))


def _freeze(options, name, freezed):
    if freezed is not None:
        _require(isinstance(freezed, int) and freezed >= 0, '--freezed must be non-negative')
        options.D_kwargs.block_kwargs.freeze_layers = freezed
        name.append(f'freezed{freezed:d}')


def _performance(options, fp32, nhwc, nobench, allow_tf32, workers):
    G_synthesis, D = options.G_kwargs.synthesis_kwargs, options.D_kwargs
    if fp32:
        for kwargs in (G_synthesis, D):
            kwargs.update(num_fp16_res=0, conv_clamp=None)
    if nhwc:
        G_synthesis.fp16_channels_last = D.block_kwargs.fp16_channels_last = True
    # Upstream records these two only when they differ from the loop's defaults.
    options.update({key: value for key, value, differs in (('cudnn_benchmark', False, nobench),
                                                           ('allow_tf32', True, allow_tf32)) if differs})
    if workers is not None:
        options.data_loader_kwargs.num_workers = _integer(workers, 0, '--workers')


def _discriminator_filter(options, name, d_antialias):
    """D's low-pass before each downsampling (--d-antialias). Off ([1]: content near Nyquist reaches
    D's lower resolutions as aliases instead of being filtered out) when the flag says 0, and by
    default with --freq-shift=out, where the anti-aliased D let the generator settle beside the data's
    frequency on some seeds (README, "Does it work, seed after seed?"); upstream's filter otherwise.
    Runs after the features are wired: the filter is the spatial D's, inside an SSD wrapper too."""
    if d_antialias is None:
        d_antialias = options.G_kwargs.get('mode') != 'out'
    if not d_antialias:
        options.D_kwargs.get('spatial_kwargs', options.D_kwargs).block_kwargs.resample_filter = [1]
        name.append('dnoaa')


def _features(options, name, cfg, facts: DataFacts, ssd, ssd_lambda, ssd_mode, freq_shift):
    try:
        suffix, options.G_kwargs, options.D_kwargs = features.configure(
            '', options.G_kwargs, options.D_kwargs, resolution=facts.resolution, channels=facts.channels,
            preset_ssd=cfg == 'ssd', ssd=ssd, ssd_lambda=ssd_lambda, ssd_mode=ssd_mode, freq_shift=freq_shift)
    except features.FeatureError as err:
        raise UserError(str(err)) from None
    name += [part for part in suffix.split('-') if part]


def _spectral_monitor(options, flag):
    """--spectral-monitor: on by default where the spectrum is what the run is about (the SSD branch
    or a frequency shift); stylefreq's own key, not in the run's name."""
    if flag is None:
        flag = options.D_kwargs.class_name != 'training.networks.Discriminator' or \
            options.G_kwargs.class_name != 'training.networks.Generator'
    if flag:
        options.spectral_monitor = True


# ---------------------------------------------------------------------------------------------------
# Entry points.

def training_options(*, data=None, gpus=None, snap=None, metrics=None, seed=None, cond=None, subset=None,
                     mirror=None, cfg=None, gamma=None, kimg=None, batch=None, aug=None, p=None, target=None,
                     augpipe=None, resume=None, freezed=None, fp32=None, nhwc=None, nobench=None, allow_tf32=None,
                     workers=None, cbase=None, cmax=None, map=None, mbstd_group=None, ssd=None, ssd_lambda=None,
                     ssd_mode=None, freq_shift=None, spectral_monitor=None, d_antialias=None):
    """(desc, options) for a new run; see the module docstring. Flags are train.py's (None = not given)."""
    options, name = EasyDict(), []
    _general(options, process_count(gpus), snap, metrics, seed)
    facts = _data(options, name, data, cond, subset, mirror)
    cfg = _preset(options, name, cfg, facts.resolution, gamma, kimg, batch)
    _capacity(options, facts.resolution, cbase, cmax, map, mbstd_group)
    _augmentation(options, name, aug, p, target, augpipe)
    _resume(options, name, resume, facts)
    _freeze(options, name, freezed)
    _performance(options, fp32, nhwc, nobench, allow_tf32, workers)
    _features(options, name, cfg, facts, ssd, ssd_lambda, ssd_mode, freq_shift)
    _discriminator_filter(options, name, d_antialias)
    _spectral_monitor(options, spectral_monitor)
    return '-'.join(name), options


def advice(options) -> list:
    """Warnings about option combinations that the measurements in the README show to fail."""
    return [OUT_SHIFT_WARNING] if features.out_shift_meets_lowpass(options.G_kwargs, options.D_kwargs) else []


OUT_SHIFT_WARNING = (f'warning: {features.OUT_SHIFT_RISK}; the default for --freq-shift=out, --d-antialias=0, lets '
                     'the discriminator see content near Nyquist')


# Flags that may change when a run directory is continued: the schedule, evaluation and loading,
# none of which changes what the networks learn from.
CONTINUE_FLAGS = ('kimg', 'snap', 'metrics', 'workers', 'spectral_monitor')


def continued_run_options(run_dir, *, gpus=None, kimg=None, snap=None, metrics=None, workers=None,
                          spectral_monitor=None, **others):
    """(options, snapshot path) to continue `run_dir` in place from its latest snapshot.

    The options are the run's own training_options.json with --kimg, --snap, --metrics, --workers
    and --spectral-monitor applied; any other flag given is an error, since it would silently be ignored.
    """
    try:
        snapshot = resume.latest_snapshot(run_dir)
        options = resume.read_run_options(run_dir)
    except resume.ResumeError as err:
        raise UserError(str(err)) from None
    for flag, value in others.items():
        _require(value is None, f'--{flag.replace("_", "-")} cannot be combined with --resume={run_dir}: a run '
                                f'directory continues with its own training_options.json (only '
                                f'{", ".join("--" + kept for kept in CONTINUE_FLAGS)} may change)')
    if gpus is not None or distributed.torchrun_world() is not None:
        _require(process_count(gpus) == options.num_gpus,
                 f'{run_dir} was trained with {options.num_gpus} processes; continue it with as many '
                 f'(--gpus={options.num_gpus} or a torchrun of that size)')
    if kimg is not None:
        options.total_kimg = _integer(kimg, 1, '--kimg')
    if snap is not None:
        options.image_snapshot_ticks = options.network_snapshot_ticks = _integer(snap, 1, '--snap')
    if metrics is not None:
        options.metrics = _metrics(metrics)
    if workers is not None:
        options.data_loader_kwargs.num_workers = _integer(workers, 0, '--workers')
    if spectral_monitor is not None:
        options.pop('spectral_monitor', None)
        if spectral_monitor:
            options.spectral_monitor = True

    # The latest snapshot replaces whatever an earlier continuation recorded; run_dir stays last.
    for key in ('resume_pkl', 'resume_progress', 'run_dir'):
        options.pop(key, None)
    options.update(resume_pkl=snapshot, resume_progress=True, run_dir=os.path.normpath(run_dir))
    return options, snapshot


def run_directory(outdir, desc: str) -> str:
    """`<outdir>/<next 5-digit id>-<desc>` (upstream's numbering); checks that it can be created."""
    outdir = os.fspath(outdir)
    _require(not os.path.exists(outdir) or os.path.isdir(outdir), f'--outdir={outdir} is a file, not a directory')
    existing = os.path.abspath(outdir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    _require(os.path.isdir(existing), f'--outdir={outdir} cannot be created: {existing} is not a directory')
    _require(os.access(existing, os.W_OK | os.X_OK),
             f'--outdir={outdir} is not writable ({existing} does not allow creating files)')
    try:
        entries = os.listdir(outdir) if os.path.isdir(outdir) else []
    except OSError as err:
        raise UserError(f'--outdir={outdir} cannot be listed ({err.strerror})') from None
    numbers = [int(found.group()) for entry in entries
               if (found := re.match(r'\d+', entry)) and os.path.isdir(os.path.join(outdir, entry))]
    return os.path.join(outdir, f'{max(numbers, default=-1) + 1:05d}-{desc}')
