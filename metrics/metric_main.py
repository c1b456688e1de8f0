"""The metric registry: names -> metric functions, evaluation, and metric-<name>.jsonl reports.

A metric function takes a `metric_streams.MetricOptions` and returns {result key: number}; it is
registered under its function name with `register_metric`, so a plugin metric only needs the
decorator (and its module imported before train.py validates --metrics). Families with a size in
the name (`specdisc5k`, `fid_levels10k`) are registered with `register_metric_family`.

Names, result keys and report fields are upstream's; README "Metrics" lists them.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time

import torch

from stylefreq import metric_streams
from stylefreq.files import atomic_write
from stylefreq.kwargs import EasyDict
from stylefreq.progress import format_time

from . import fid_levels, frechet, inception_score, kid, perceptual_path_length, precision_recall
from . import specdisc

_metric_dict = {}       # name -> fn(opts) -> dict
_families = {}          # prefix -> fn(opts, name, num_images) -> dict, for the names '<prefix><N>k'
_FAMILY_MAX_DIGITS = 6  # N up to 999999


class MetricResult(EasyDict):
    """What calc_metric returns: upstream's fields (results, metric, total_time, total_time_str,
    num_gpus) as items, and the figures ({name suffix: PIL image}) as an attribute, so that the
    jsonl record holds exactly upstream's fields."""

    def __init__(self, figures=None, **fields):
        super().__init__(**fields)
        object.__setattr__(self, 'figures', dict(figures or {}))


def register_metric(fn):
    """Decorator: make `fn(opts) -> dict` available as the metric `fn.__name__`."""
    if not (callable(fn) and isinstance(getattr(fn, '__name__', None), str)):
        raise TypeError('register_metric decorates a named function')
    _metric_dict.update({fn.__name__: fn})
    return fn


def register_metric_family(prefix: str):
    """Decorator: `fn(opts, name, num_images)` computes the metrics '<prefix><N>k' (N >= 1)."""
    if not re.fullmatch(r'[a-z][a-z0-9_]*', prefix):
        raise ValueError(f'metric family prefix {prefix!r} must be lower-case letters, digits and _')

    def decorate(fn):
        _families[prefix] = fn
        return fn
    return decorate


def _family_member(metric: str):
    """(family fn, number of images) when `metric` names a family member, else None."""
    for prefix, fn in _families.items():
        found = re.fullmatch(re.escape(prefix) + rf'([1-9][0-9]{{0,{_FAMILY_MAX_DIGITS - 1}}})k', metric)
        if found:
            return fn, int(found[1]) * 1000
    return None


def is_valid_metric(metric) -> bool:
    return isinstance(metric, str) and (metric in _metric_dict or _family_member(metric) is not None)


def list_valid_metrics() -> list:
    """The registered names (family members are not listed; see describe_valid_metrics)."""
    return list(_metric_dict)


def describe_valid_metrics() -> str:
    """'fid50k_full, kid50k_full, ..., specdisc<N>k, fid_levels<N>k', for messages and --help."""
    return ', '.join(list_valid_metrics() + [f'{prefix}<N>k' for prefix in _families])


def _metric_function(metric):
    if isinstance(metric, str) and metric in _metric_dict:
        return _metric_dict[metric]
    member = _family_member(metric) if isinstance(metric, str) else None
    if member is None:
        raise ValueError(f'unknown metric {metric!r}; valid: {describe_valid_metrics()}')
    fn, num_images = member
    return functools.partial(fn, name=metric, num_images=num_images)


# ---------------------------------------------------------------------------------------------
# Evaluation and reports.


def calc_metric(metric, **kwargs) -> MetricResult:
    """Evaluate one metric; kwargs are MetricOptions' (G, dataset_kwargs, num_gpus, rank, device,
    progress, cache, detector_urls, gen_dataset_kwargs, ...). Every rank gets rank 0's numbers."""
    compute = _metric_function(metric)
    options = metric_streams.MetricOptions(**kwargs)
    started = time.time()
    values = compute(options)
    seconds = time.time() - started
    if not isinstance(values, dict):
        raise metric_streams.MetricError(f'metric {metric} returned a {type(values).__name__}, not a dict of results')
    results = _from_rank0(options, {str(key): float(value) for key, value in values.items()})
    return MetricResult(results=EasyDict(results), metric=metric, total_time=seconds,
                        total_time_str=format_time(seconds), num_gpus=options.num_gpus, figures=options.figures)


def _from_rank0(opts, results: dict) -> dict:
    # The metrics all-gather what they need, so ranks agree already up to reduction order; rank
    # 0's values make every rank log and compare exactly the same numbers.
    if opts.num_gpus == 1 or not results:
        return results
    device = opts.device if opts.device.type == 'cuda' else torch.device('cpu')
    values = torch.tensor(list(results.values()), dtype=torch.float64, device=device)
    torch.distributed.broadcast(values, src=0)
    return dict(zip(results, values.cpu().tolist()))


def figure_path(metric, suffix, run_dir=None, snapshot_pkl=None) -> str:
    """Where a figure goes: metric-<name><suffix>[-<snapshot name>].png, in the run directory or
    else the current directory."""
    stem = f'metric-{metric}{suffix}'
    if snapshot_pkl is not None:
        stem += '-' + os.path.splitext(os.path.basename(snapshot_pkl))[0]
    return os.path.join(run_dir if run_dir is not None else os.getcwd(), stem + '.png')


def report_metric(result_dict, run_dir=None, snapshot_pkl=None):
    """Print the result as one JSON line, append it to <run_dir>/metric-<name>.jsonl when there is
    a run directory, and write the metric's figures."""
    name = result_dict['metric']
    if not is_valid_metric(name):
        raise ValueError(f'unknown metric {name!r}; valid: {describe_valid_metrics()}')
    shown_pkl = snapshot_pkl
    if snapshot_pkl is not None and run_dir is not None:
        shown_pkl = os.path.relpath(snapshot_pkl, run_dir)
    record = {'results': dict(result_dict['results']), 'metric': name}
    record.update({field: result_dict[field] for field in ('total_time', 'total_time_str', 'num_gpus')})
    record.update(snapshot_pkl=shown_pkl, timestamp=time.time())
    line = json.dumps(record)
    print(line)
    if run_dir is not None:
        jsonl = os.path.join(run_dir, f'metric-{name}.jsonl')
        with open(jsonl, 'at') as log:
            log.write(line + '\n')
    for suffix, image in getattr(result_dict, 'figures', {}).items():
        path = figure_path(name, suffix, run_dir, snapshot_pkl)
        with atomic_write(path) as png:
            image.save(png, format='png')
        print(f'Figure: {path}')


# ---------------------------------------------------------------------------------------------
# The metrics. Each is (name, which reals, computation, result-key suffixes): 'full' metrics see
# every real image without x-flips; 'all' (upstream's legacy ones) every real image with the
# dataset's x-flip setting; 'as given' leaves the dataset options alone.

_REAL_IMAGES = {
    'full': dict(max_size=None, xflip=False),
    'all': dict(max_size=None),
    'as given': {},
}


def _define(name: str, reals: str, compute, suffixes=('',)):
    """Register metric `name`: compute(opts) gives one value per key `name + suffix`."""
    dataset_overrides = _REAL_IMAGES[reals]

    def metric(opts):
        opts.dataset_kwargs.update(dataset_overrides)
        values = compute(opts)
        values = values if isinstance(values, tuple) else (values,)
        return {name + suffix: value for suffix, value in zip(suffixes, values, strict=True)}

    metric.__name__ = metric.__qualname__ = name
    register_metric(metric)


_KID = dict(num_gen=50000, num_subsets=100, max_subset_size=1000)
_PR = dict(num_gen=50000, nhood_size=3, row_batch_size=10000, col_batch_size=10000)
_PR_KEYS = ('_precision', '_recall')
_PPL = dict(num_samples=50000, epsilon=1e-4, batch_size=2)

for _name, _reals, _compute, *_suffixes in [
    # Primary metrics.
    ('fid50k_full', 'full', functools.partial(frechet.compute_fid, max_real=None, num_gen=50000)),
    ('kid50k_full', 'full', functools.partial(kid.compute_kid, max_real=1000000, **_KID)),
    ('pr50k3_full', 'full', functools.partial(precision_recall.compute_pr, max_real=200000, **_PR), _PR_KEYS),
    ('ppl2_wend', 'as given', functools.partial(perceptual_path_length.compute_ppl, space='w', sampling='end',
                                                crop=False, **_PPL)),
    ('is50k', 'full', functools.partial(inception_score.compute_is, num_gen=50000, num_splits=10),
     ('_mean', '_std')),
    # Legacy metrics: 50k reals, cropped PPL.
    ('fid50k', 'all', functools.partial(frechet.compute_fid, max_real=50000, num_gen=50000)),
    ('kid50k', 'all', functools.partial(kid.compute_kid, max_real=50000, **_KID)),
    ('pr50k3', 'all', functools.partial(precision_recall.compute_pr, max_real=50000, **_PR), _PR_KEYS),
    *[(f'ppl_{space}{sampling}', 'all', functools.partial(perceptual_path_length.compute_ppl, space=space,
                                                           sampling=sampling, crop=True, **_PPL))
      for space, sampling in [('z', 'full'), ('w', 'full'), ('z', 'end'), ('w', 'end')]],
]:
    _define(_name, _reals, _compute, *_suffixes)

# Metrics that need a generator network (a folder of images cannot stand in for it).
NEEDS_NETWORK = frozenset(name for name in _metric_dict if name.startswith('ppl'))


# ---------------------------------------------------------------------------------------------
# stylefreq's spectral metrics: N generated images against as many reals (every real, unflipped).


def _spectral(compute, opts, name: str, num_images: int):
    opts.dataset_kwargs.update(_REAL_IMAGES['full'])
    return compute(opts, name, num_gen=num_images, max_real=num_images)


for _prefix, _compute, _default_images in [('specdisc', specdisc.compute_specdisc, 10000),
                                           ('fid_levels', fid_levels.compute_fid_levels, 50000)]:
    _family = register_metric_family(_prefix)(functools.partial(_spectral, _compute))
    _plain = functools.partial(_family, name=_prefix, num_images=_default_images)   # 'specdisc' = 'specdisc10k'
    _plain.__name__ = _prefix
    register_metric(_plain)

del _name, _reals, _compute, _suffixes, _prefix, _default_images, _family, _plain
