"""python -m studies <study> --outdir=DIR [options]: the frequency-bias experiments, run through
stylefreq's own training, generation and metrics (see each study's module for what it measures).

    python -m studies cosine --outdir=study-cosine          one high carrier, base/out/fsg, 3 seeds
    python -m studies bias_curve --outdir=bias              W1 against carrier frequency per variant
    python -m studies ssd --outdir=study-ssd                specdisc of plain vs --cfg=ssd generators
    python -m studies ablation --outdir=study-ablation      the output shift, one training choice changed at a time
"""

from __future__ import annotations

import click

from studies import ablation, bias_curve, cosine, runs, ssd


def _ints(text, what):
    try:
        values = [int(v) for v in str(text).split(',') if v.strip()]
    except ValueError:
        raise click.BadParameter(f'{text!r} is not a comma-separated list of integers', param_hint=what) from None
    if not values:
        raise click.BadParameter('the list is empty', param_hint=what)
    return values


def _words(text, allowed, what):
    values = [v.strip() for v in str(text).split(',') if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise click.BadParameter(f'{", ".join(bad) or "nothing"} is not one of {", ".join(allowed)}', param_hint=what)
    return values


def setup_options(fn=None, *, seeds='0,1,2', kimg=20):
    """The train.py-equivalent flags every study takes (`seeds`, `kimg`: the study's defaults)."""
    if fn is None:
        return lambda f: setup_options(f, seeds=seeds, kimg=kimg)
    options = [
        click.option('--outdir', required=True, metavar='DIR', help='Where datasets, runs and results go'),
        click.option('--resolution', type=click.IntRange(8, 1024), default=32, show_default=True, help='Image size'),
        click.option('--count', type=click.IntRange(min=100), default=5000, show_default=True,
                     help='Training images per dataset'),
        click.option('--kimg', type=click.IntRange(min=1), default=kimg, show_default=True, help='Training length per run'),
        click.option('--batch', type=click.IntRange(min=1), default=32, show_default=True, help='Batch size'),
        click.option('--cbase', type=click.IntRange(min=1), default=2048, show_default=True, help='channel_base'),
        click.option('--cmax', type=click.IntRange(min=1), default=64, show_default=True, help='channel_max'),
        click.option('--map', type=click.IntRange(min=1), default=2, show_default=True, help='Mapping depth'),
        click.option('--gamma', type=click.FloatRange(min=0), default=1.0, show_default=True, help='R1 gamma'),
        click.option('--samples', type=click.IntRange(min=10), default=1000, show_default=True,
                     help='Generated and held-out images per measurement'),
        click.option('--seeds', default=seeds, show_default=True, help='Training seeds'),
        click.option('--gpus', type=click.IntRange(min=1), default=1, show_default=True,
                     help='Processes per run (GPUs, or CPU processes)'),
        click.option('--device', default=None, help='Force a torch device (e.g. cpu) [default: cuda if available]'),
        click.option('--threads', type=click.IntRange(min=1), default=None, help='CPU threads per process'),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _setup(kw):
    return runs.Setup(**{k: kw.pop(k) for k in ('resolution', 'count', 'kimg', 'batch', 'cbase', 'cmax', 'map',
                                                'gamma', 'samples', 'gpus', 'device', 'threads')})


@click.group()
def main():
    """Frequency-bias studies (python -m studies STUDY --help)."""


@main.command(name='cosine')
@setup_options
@click.option('--carrier', default='15,15', show_default=True, help='Carrier FX,FY in cycles per image')
@click.option('--variants', default='base,out,fsg', show_default=True, help=runs.VARIANT_HELP)
def cosine_command(outdir, carrier, variants, seeds, **kw):
    """One high-frequency carrier, each variant on several seeds (cosine.json, cosine.png)."""
    pair = _ints(carrier, '--carrier')
    if len(pair) != 2:
        raise click.BadParameter(f'{carrier!r} is not FX,FY', param_hint='--carrier')
    try:
        cosine.run(outdir, _setup(kw), tuple(pair), _words(variants, runs.VARIANTS, '--variants'),
                   _ints(seeds, '--seeds'))
    except ValueError as err:
        raise click.ClickException(str(err)) from None


@main.command(name='bias_curve')
@setup_options(seeds='0')
@click.option('--carriers', default='1,3,5,7,9,11,13,15', show_default=True,
              help='Carriers c: planar cosines at (c, c) cycles per image')
@click.option('--variants', default=','.join(runs.VARIANTS[:4]), show_default=True, help=runs.VARIANT_HELP)
def bias_curve_command(outdir, carriers, variants, seeds, **kw):
    """W1 of each variant against the carrier frequency (bias_curve.json, bias_curve.png)."""
    try:
        bias_curve.run(outdir, _setup(kw), _ints(carriers, '--carriers'),
                       _words(variants, runs.VARIANTS, '--variants'), _ints(seeds, '--seeds'))
    except ValueError as err:
        raise click.ClickException(str(err)) from None


@main.command(name='ssd')
@setup_options
@click.option('--data', default='builtin:blobs32', show_default=True, help='Training data')
@click.option('--metric', default='specdisc10k', show_default=True, help='A specdisc metric (specdisc<N>k)')
def ssd_command(outdir, data, metric, seeds, **kw):
    """specdisc of the plain and the --cfg=ssd generator at equal kimg (ssd.json)."""
    if not metric.startswith('specdisc'):
        raise click.BadParameter(f'{metric} is not a specdisc metric', param_hint='--metric')
    try:
        ssd.run(outdir, _setup(kw), data, _ints(seeds, '--seeds'), metric)
    except ValueError as err:
        raise click.ClickException(str(err)) from None


@main.command(name='ablation')
@setup_options(seeds='0,1,2,3,4', kimg=10)
@click.option('--carrier', default='15,15', show_default=True, help='Carrier FX,FY in cycles per image')
@click.option('--factors', default=','.join(ablation.DEFAULT_FACTORS), show_default=True,
              help='What to change, one at a time: ' + '; '.join(f'{k}: {f.what}' for k, f in ablation.FACTORS.items()))
@click.option('--base-seeds', default='0,1', show_default=True, help='Seeds of the plain generator (the success threshold)')
def ablation_command(outdir, carrier, factors, seeds, base_seeds, **kw):
    """The output-shift recipe with one training choice changed at a time (ablation.json, ablation.png)."""
    pair = _ints(carrier, '--carrier')
    if len(pair) != 2:
        raise click.BadParameter(f'{carrier!r} is not FX,FY', param_hint='--carrier')
    try:
        ablation.run(outdir, _setup(kw), tuple(pair), _words(factors, tuple(ablation.FACTORS), '--factors'),
                     _ints(seeds, '--seeds'), _ints(base_seeds, '--base-seeds'))
    except ValueError as err:
        raise click.ClickException(str(err)) from None


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
