#!/usr/bin/env python
"""Train a StyleGAN2-ADA-compatible GAN, with SSD-GAN's discriminator branch and frequency-shifted
synthesis as options. Flags, defaults and run-directory names are upstream's (StyleGAN2-ADA's).

    python train.py --outdir=runs --data=~/datasets/ffhq256.zip --gpus=8 --cfg=paper256 --mirror=1
    python train.py --outdir=runs --resume=runs/00003-ffhq256-mirror-paper256      # continue in place
    torchrun --nnodes=2 --nproc-per-node=8 ... train.py --outdir=runs --data=... --cfg=paper256

This file is the command line only: training/config.py turns flags into the options dict and
training/launch.py runs them (processes, the run directory's lock and log, training_loop).
"""

from __future__ import annotations

import json
import math
import os

import click

from stylefreq import distributed
from training import config, launch

def _finite(ctx, param, number):
    """click callback: click's FloatRange lets nan and inf through."""
    if number is not None and not math.isfinite(number):
        raise click.BadParameter(f'{number} is not a finite number.', ctx=ctx, param=param)
    return number


def _metric_names(_ctx, _param, text):
    """click callback: 'a,b' -> ['a', 'b']; 'none' or '' -> []; None (not given) stays None."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(',')]
    return [] if text.strip().lower() in ('', 'none') else [name for name in names if name]


def _plan(options) -> str:
    """What train.py prints before training: the options and a summary."""
    data = options.training_set_kwargs
    rows = (('Output directory', options.run_dir), ('Training data', data.path),
            ('Training duration', f'{options.total_kimg} kimg'), ('Number of GPUs', options.num_gpus),
            ('Number of images', data.max_size), ('Image resolution', data.resolution),
            ('Conditional model', data.use_labels), ('Dataset x-flips', data.xflip))
    summary = ''.join(f'{label + ":":<20}{value}\n' for label, value in rows)
    return f'\nTraining options:\n{json.dumps(options, indent=2)}\n\n{summary}'


HELP = """Train a StyleGAN2-ADA-compatible GAN.

\b
Base configs (--cfg): auto, stylegan2, paper256, paper512, paper1024, cifar (as upstream);
ssd = auto plus the SSD-GAN spectral discriminator branch, which --ssd=1 (or --ssd-lambda,
--ssd-mode) adds to any other --cfg.
--resume=<run dir> continues that run in place from its latest snapshot: images seen, tick,
ADA p and optimizer state carry over. Its options come from its training_options.json; only
--kimg, --snap, --metrics, --workers and --spectral-monitor may change.
Under torchrun the presets are computed for torchrun's number of processes.
"""


@click.command(help=HELP)
@click.pass_context
# General.
@click.option('--outdir', help='Where to save the results', required=True, metavar='DIR')
@click.option('--gpus', help='Number of GPUs (or CPU processes without CUDA) [default: 1]', type=click.IntRange(min=1),
              metavar='INT')
@click.option('--snap', help='Snapshot interval [default: 50 ticks]', type=click.IntRange(min=1), metavar='INT')
@click.option('--metrics', help='Comma-separated list or "none" [default: none]', callback=_metric_names,
              metavar='LIST')
@click.option('--seed', help='Random seed [default: 0]', type=click.IntRange(0, config.MAX_SEED), metavar='INT')
@click.option('-n', '--dry-run', help='Print training options and exit', is_flag=True)
# Dataset.
@click.option('--data', help='Training data (directory, zip, or builtin:NAME)', metavar='PATH')
@click.option('--cond', help='Train conditional model based on dataset labels [default: false]', type=bool,
              metavar='BOOL')
@click.option('--subset', help='Train with only N images [default: all]', type=click.IntRange(min=1), metavar='INT')
@click.option('--mirror', help='Enable dataset x-flips [default: false]', type=bool, metavar='BOOL')
# Base config.
@click.option('--cfg', help='Base config [default: auto]', type=click.Choice(list(config.PRESETS)))
@click.option('--gamma', help='Override R1 gamma', type=click.FloatRange(min=0), callback=_finite)
@click.option('--kimg', help='Override training duration', type=click.IntRange(min=1), metavar='INT')
@click.option('--batch', help='Override batch size', type=click.IntRange(min=1), metavar='INT')
# Discriminator augmentation.
@click.option('--aug', help='Augmentation mode [default: ada]', type=click.Choice(list(config.AUG_MODES)))
@click.option('--p', help='Augmentation probability for --aug=fixed', type=click.FloatRange(0, 1), callback=_finite)
@click.option('--target', help='ADA target value for --aug=ada', type=click.FloatRange(0, 1), callback=_finite)
@click.option('--augpipe', help='Augmentation pipeline [default: bgc]',
              type=click.Choice(list(config.augment.augpipe_specs)))
# Transfer learning.
@click.option('--resume', help='Resume from a pickle, URL, name (ffhq256, ...) or run directory [default: noresume]',
              metavar='PKL|DIR')
@click.option('--freezed', help='Freeze-D [default: 0 layers]', type=click.IntRange(min=0), metavar='INT')
# Performance.
@click.option('--fp32', help='Disable mixed-precision training', type=bool, metavar='BOOL')
@click.option('--nhwc', help='Use NHWC memory format with FP16', type=bool, metavar='BOOL')
@click.option('--nobench', help='Disable cuDNN benchmarking', type=bool, metavar='BOOL')
@click.option('--allow-tf32', help='Allow PyTorch to use TF32 internally', type=bool, metavar='BOOL')
@click.option('--workers', help='Override number of DataLoader workers [default: 3]', type=click.IntRange(min=0),
              metavar='INT')
@click.option('--threads', help='Torch threads per process [default: $OMP_NUM_THREADS, else cores / processes]',
              type=click.IntRange(min=1), metavar='INT')
# Capacity (StyleGAN3's names).
@click.option('--cbase', help='Capacity multiplier (channel_base) [default: from --cfg]', type=click.IntRange(min=1),
              metavar='INT')
@click.option('--cmax', help='Max. feature maps (channel_max) [default: 512]', type=click.IntRange(min=1),
              metavar='INT')
@click.option('--map', help='Mapping network depth [default: from --cfg]', type=click.IntRange(min=1), metavar='INT')
@click.option('--mbstd-group', help='Minibatch std group size [default: from --cfg]', type=click.IntRange(min=1),
              metavar='INT')
# The papers' features.
@click.option('--ssd', help='Add the SSD-GAN spectral discriminator branch [default: true for --cfg=ssd]', type=bool,
              metavar='BOOL')
@click.option('--ssd-lambda', help='SSD weight of the spatial logit, in (0, 1] [default: 0.5]',
              type=click.FloatRange(min=0, max=1, min_open=True), callback=_finite)
@click.option('--ssd-mode', help='SSD mode: official (stop-gradient C) or joint [default: official]',
              type=click.Choice(['official', 'joint']))
@click.option('--freq-shift', help='Frequency-shifted synthesis: none, out, fsg16, noshift16, learn16 or carriers '
              'u,v;u,v in cycles/pixel, e.g. 1/16,0;0,1/16 [default: none]', metavar='SPEC')
@click.option('--d-antialias', help='Low-pass (FIR) before each downsampling in D; 0 lets D see content near '
              'Nyquist [default: 0 with --freq-shift=out, else 1]', type=bool, metavar='BOOL')
@click.option('--spectral-monitor', help='Report the generated images\' spectral discrepancy every tick '
              '[default: true with --cfg=ssd or --freq-shift]', type=bool, metavar='BOOL')
def main(ctx, outdir, dry_run, threads, **flags):
    torchrun = distributed.torchrun_world()
    is_rank0 = torchrun is None or torchrun[0] == 0
    resume_spec = flags['resume']
    try:
        if resume_spec is not None and os.path.isdir(resume_spec):
            others = {name: value for name, value in flags.items() if name != 'resume'}
            options, snapshot = config.continued_run_options(resume_spec, **others)
            continuing = f'Continuing {options.run_dir} from {os.path.basename(snapshot)}'
        else:
            desc, options = config.training_options(**flags)
            options.run_dir = config.run_directory(outdir, desc)
            continuing = None
    except config.UserError as err:
        ctx.fail(str(err))

    say = print if is_rank0 else (lambda _text: None)      # under torchrun, rank 0 speaks for all
    say(_plan(options))
    for note in config.advice(options):
        say(note)
    if dry_run:
        say('Dry run; exiting.')
        return
    if continuing:
        say(continuing)
    launch.launch(options, threads=threads)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
