"""The metric registry: upstream's metric names and result keys, plus stylefreq's spectral metrics.

    result = calc_metric('fid50k_full', G=G, dataset_kwargs=training_set_kwargs, num_gpus=1, rank=0)
    report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl)   # -> metric-fid50k_full.jsonl

A metric is a function `fn(opts: MetricOptions) -> {result_name: float}` registered under its
function name with `@register_metric` (plugins register theirs the same way, before train.py
validates --metrics). Families register a name pattern with `register_metric_family`:
`specdisc<N>k` and `fid_levels<N>k` evaluate N thousand generated images.
"""

from __future__ import annotations

import json
import os
import re
import time

import torch
import torch.distributed as dist

from stylefreq.kwargs import EasyDict

from . import metric_utils
from . import frechet, kid, precision_recall, inception_score, perceptual_path_length

_metric_dict = {}        # name -> fn(opts)
_metric_families = []    # (compiled pattern, template, fn(opts, match))


def register_metric(fn):
    """Decorator: register `fn` under `fn.__name__`."""
    if not callable(fn):
        raise TypeError('register_metric expects a function')
    _metric_dict[fn.__name__] = fn
    return fn


def register_metric_family(pattern: str, template: str):
    """Decorator: register `fn(opts, match)` for every name that fully matches the regex `pattern`
    (`template` is how the family is shown to users, e.g. 'specdisc<N>k')."""
    def decorator(fn):
        _metric_families.append((re.compile(pattern), template, fn))
        return fn
    return decorator


def _lookup(metric):
    if not isinstance(metric, str):
        return None
    if metric in _metric_dict:
        return _metric_dict[metric]
    for pattern, _template, fn in _metric_families:
        match = pattern.fullmatch(metric)
        if match:
            return lambda opts: fn(opts, match)
    return None


def is_valid_metric(metric) -> bool:
    return _lookup(metric) is not None


def list_valid_metrics() -> list:
    """Registered names (families are described by `describe_valid_metrics`)."""
    return list(_metric_dict.keys())


def describe_valid_metrics() -> str:
    families = [t for _p, t, _f in _metric_families]
    return ', '.join(list_valid_metrics() + families)


class MetricResult(EasyDict):
    """The EasyDict calc_metric returns (results, metric, total_time, total_time_str, num_gpus).
    `figures` ({name suffix: PIL.Image}) is an attribute, not an item, so the dict stays JSON."""

    @property
    def figures(self):
        return self.__dict__.get('_figures', {})

    def set_figures(self, figures):
        self.__dict__['_figures'] = dict(figures)


def calc_metric(metric, **kwargs) -> MetricResult:
    """Compute `metric` with MetricOptions(**kwargs); every rank must call it (collectives inside).
    Returns the same result on every rank."""
    fn = _lookup(metric)
    if fn is None:
        raise ValueError(f'unknown metric {metric!r}; valid: {describe_valid_metrics()}')
    opts = metric_utils.MetricOptions(**kwargs)

    start = time.time()
    results = fn(opts)
    total_time = time.time() - start

    if not isinstance(results, dict) or not all(isinstance(k, str) for k in results):
        raise TypeError(f'metric {metric} returned {type(results).__name__}, expected a dict of name -> float')
    results = {k: float(v) for k, v in results.items()}
    if opts.num_gpus > 1:
        # Every rank computed the same value; rank 0's is authoritative (as upstream).
        dev = opts.device if opts.device.type == 'cuda' else torch.device('cpu')
        for key in sorted(results):
            value = torch.tensor(results[key], dtype=torch.float64, device=dev)
            dist.broadcast(value, src=0)
            results[key] = float(value.cpu())

    result = MetricResult(
        results=EasyDict(results),
        metric=metric,
        total_time=total_time,
        total_time_str=metric_utils.format_time(total_time),
        num_gpus=opts.num_gpus,
    )
    if opts.rank == 0:
        result.set_figures(opts.figures)
    return result


def figure_path(metric, suffix, run_dir=None, snapshot_pkl=None) -> str:
    """Where report_metric writes a metric's figure: beside metric-<name>.jsonl (the cwd without a
    run directory), named after the snapshot when there is one."""
    stem = f'metric-{metric}'
    if snapshot_pkl is not None:
        stem += '-' + os.path.splitext(os.path.basename(snapshot_pkl))[0]
    if suffix:
        stem += '-' + suffix
    return os.path.join(run_dir if run_dir is not None else os.getcwd(), stem + '.png')


def report_metric(result_dict, run_dir=None, snapshot_pkl=None):
    """Print one JSON line and append it to `<run_dir>/metric-<metric>.jsonl`; write any figures."""
    metric = result_dict['metric']
    if not is_valid_metric(metric):
        raise ValueError(f'unknown metric {metric!r}; valid: {describe_valid_metrics()}')
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    fields = ('results', 'metric', 'total_time', 'total_time_str', 'num_gpus')
    line = json.dumps(dict({k: result_dict[k] for k in fields if k in result_dict},
                           snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    print(line)
    if run_dir is not None and os.path.isdir(run_dir):
        with open(os.path.join(run_dir, f'metric-{metric}.jsonl'), 'at') as f:
            f.write(line + '\n')
    figures = getattr(result_dict, 'figures', None) or {}
    fig_dir = run_dir if run_dir is not None and os.path.isdir(run_dir) else None
    for suffix, image in figures.items():
        path = figure_path(metric, suffix, fig_dir, snapshot_pkl)
        image.save(path)
        print(f'Saved {path}')


# ------------------------------------------------------------------------------------------------
# Primary metrics (upstream's names and result keys).

def _full(opts):
    opts.dataset_kwargs.update(max_size=None, xflip=False)


@register_metric
def fid50k_full(opts):
    _full(opts)
    return dict(fid50k_full=frechet.compute_fid(opts, max_real=None, num_gen=50000))


@register_metric
def kid50k_full(opts):
    _full(opts)
    return dict(kid50k_full=kid.compute_kid(opts, max_real=1000000, num_gen=50000, num_subsets=100,
                                            max_subset_size=1000))


@register_metric
def pr50k3_full(opts):
    _full(opts)
    p, r = precision_recall.compute_pr(opts, max_real=200000, num_gen=50000, nhood_size=3,
                                       row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_full_precision=p, pr50k3_full_recall=r)


@register_metric
def ppl2_wend(opts):
    return dict(ppl2_wend=perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space='w',
                                                             sampling='end', crop=False, batch_size=2))


@register_metric
def is50k(opts):
    _full(opts)
    mean, std = inception_score.compute_is(opts, num_gen=50000, num_splits=10)
    return dict(is50k_mean=mean, is50k_std=std)


# ------------------------------------------------------------------------------------------------
# Legacy metrics (50k reals with the dataset's own xflip setting; cropped PPL).

@register_metric
def fid50k(opts):
    opts.dataset_kwargs.update(max_size=None)
    return dict(fid50k=frechet.compute_fid(opts, max_real=50000, num_gen=50000))


@register_metric
def kid50k(opts):
    opts.dataset_kwargs.update(max_size=None)
    return dict(kid50k=kid.compute_kid(opts, max_real=50000, num_gen=50000, num_subsets=100, max_subset_size=1000))


@register_metric
def pr50k3(opts):
    opts.dataset_kwargs.update(max_size=None)
    p, r = precision_recall.compute_pr(opts, max_real=50000, num_gen=50000, nhood_size=3,
                                       row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_precision=p, pr50k3_recall=r)


def _ppl(opts, space, sampling):
    return perceptual_path_length.compute_ppl(opts, num_samples=50000, epsilon=1e-4, space=space, sampling=sampling,
                                              crop=True, batch_size=2)


@register_metric
def ppl_zfull(opts):
    return dict(ppl_zfull=_ppl(opts, 'z', 'full'))


@register_metric
def ppl_wfull(opts):
    return dict(ppl_wfull=_ppl(opts, 'w', 'full'))


@register_metric
def ppl_zend(opts):
    return dict(ppl_zend=_ppl(opts, 'z', 'end'))


@register_metric
def ppl_wend(opts):
    return dict(ppl_wend=_ppl(opts, 'w', 'end'))


# ------------------------------------------------------------------------------------------------
# Spectral metrics (README "Metrics" has the exact definitions).

def _spectral_modules():
    from . import fid_levels as fl, specdisc as sd  # import late: they need stylefreq.spectral
    return sd, fl


@register_metric
def specdisc(opts):
    _full(opts)
    return _spectral_modules()[0].compute_specdisc(opts, prefix='specdisc', num_gen=10000, max_real=10000)


@register_metric_family(r'specdisc([1-9][0-9]*)k', 'specdisc<N>k')
def _specdisc_family(opts, match):
    _full(opts)
    n = int(match.group(1)) * 1000
    return _spectral_modules()[0].compute_specdisc(opts, prefix=match.group(0), num_gen=n, max_real=n)


@register_metric
def fid_levels(opts):
    _full(opts)
    return _spectral_modules()[1].compute_fid_levels(opts, prefix='fid_levels', num_gen=50000, max_real=50000)


@register_metric_family(r'fid_levels([1-9][0-9]*)k', 'fid_levels<N>k')
def _fid_levels_family(opts, match):
    _full(opts)
    n = int(match.group(1)) * 1000
    return _spectral_modules()[1].compute_fid_levels(opts, prefix=match.group(0), num_gen=n, max_real=n)
