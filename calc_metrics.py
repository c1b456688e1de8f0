"""Evaluate metrics of a network pickle (upstream or stylefreq) or of a folder of images.

    python calc_metrics.py --metrics=fid50k_full,specdisc --network=runs/00003-x/network-snapshot-001000.pkl
    python calc_metrics.py --metrics=kid50k_full --images=~/samples.zip --data=~/datasets/ffhq256.zip

Results are printed as JSON lines and, when the pickle lies in a run directory (one with
training_options.json), appended to <run dir>/metric-<name>.jsonl. Several processes (--gpus, or
torchrun) are started by stylefreq.distributed.launch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import click
import torch

from metrics import metric_main
from stylefreq import checkpoint, distributed, metric_streams, progress
from stylefreq.files import write_text
from stylefreq.kwargs import EasyDict, registered_class
from training.dataset import Dataset, DatasetError

DATASET_CLASS = 'training.dataset.ImageFolderDataset'


@dataclasses.dataclass
class Evaluation:
    """Everything the worker processes need (picklable, sent to spawned processes)."""
    metrics: list
    G: torch.nn.Module | None
    dataset_kwargs: dict
    gen_dataset_kwargs: dict | None
    detector_urls: dict
    run_dir: str | None
    snapshot_pkl: str | None
    verbose: bool
    notes_dir: str | None = None    # where spawned processes leave the sentence of an error


def _one_line(err) -> str:
    return ' '.join(str(err).split())


def _local(path: str) -> str:
    """Expand '~' in a local path (a flag value `--x=~/y` reaches us unexpanded); URLs unchanged."""
    return path if '://' in path else os.path.expanduser(path)


# ---------------------------------------------------------------------------------------------
# Checking the command line.


def parse_metric_list(text: str) -> list:
    names = [name.strip() for name in text.split(',')]
    if names == ['none']:
        raise click.BadParameter('"none" leaves nothing to compute; name at least one metric.',
                                 param_hint='--metrics')
    unknown = [name for name in names if not metric_main.is_valid_metric(name)]
    if unknown:
        raise click.BadParameter(f'unknown metric {unknown[0] or "(empty)"}; valid: '
                                 f'{metric_main.describe_valid_metrics()}', param_hint='--metrics')
    return names


def load_generator(network: str, verbose: bool):
    """(G_ema, the pickle's training_set_kwargs or None)."""
    try:
        data = checkpoint.load_network_pkl(network, verbose=verbose)
    except (OSError, ValueError, checkpoint.CheckpointError) as err:
        raise click.BadParameter(_one_line(err), param_hint='--network') from None
    G = data.get('G_ema')
    if not isinstance(G, torch.nn.Module) or not all(hasattr(G, a) for a in ('z_dim', 'c_dim', 'img_resolution',
                                                                               'img_channels')):
        raise click.BadParameter(f'{network} holds no G_ema generator network that stylefreq can run.',
                                 param_hint='--network')
    return G, data.get('training_set_kwargs')


def dataset_from_pickle(network: str, recorded) -> EasyDict:
    """The pickle's training_set_kwargs, if they name a registered dataset class."""
    if not isinstance(recorded, dict) or not recorded:
        raise click.UsageError(f'{network} does not record its training data (training_set_kwargs); give --data.')
    class_name = recorded.get('class_name')
    cls = registered_class(class_name) if isinstance(class_name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        raise click.UsageError(f'{network} names the dataset class {class_name!r} in its training_set_kwargs, '
                               f'which is not a registered dataset class; give --data.')
    return EasyDict(recorded)


def open_checked(dataset_kwargs: dict, failure: str, param_hint: str | None):
    """Open a dataset once to find problems before any process starts; `failure` begins the message."""
    options = dict(dataset_kwargs)
    cls = registered_class(options.pop('class_name'))
    try:
        return cls(**options)
    except DatasetError as err:
        message = f'{failure}: {_one_line(err)}'
    except TypeError as err:       # options the class does not take (a hand-edited or foreign pickle)
        message = f'{failure}: its options do not suit {cls.__name__} ({_one_line(err)}).'
    if param_hint is None:
        raise click.UsageError(message)
    raise click.BadParameter(message, param_hint=param_hint)


def check_against_generator(dataset, G, where: str):
    if dataset.num_channels != int(G.img_channels):
        raise click.UsageError(f'{where} has {dataset.num_channels}-channel images but the generator makes '
                               f'{int(G.img_channels)}-channel ones.')
    if int(G.c_dim) and dataset.label_dim != int(G.c_dim):
        raise click.UsageError(f'the generator is conditional with c_dim={int(G.c_dim)} but {where} has labels of '
                               f'dimension {dataset.label_dim}.')


def find_run_dir(network: str) -> str | None:
    """The pickle's directory if it is a training run directory (holds training_options.json)."""
    if not os.path.isfile(network):
        return None
    folder = os.path.dirname(os.path.abspath(network))
    return folder if os.path.isfile(os.path.join(folder, 'training_options.json')) else None


def _mirrored(dataset_kwargs: EasyDict, mirror) -> EasyDict:
    """--mirror, when given, overrides the dataset's x-flip setting."""
    return dataset_kwargs if mirror is None else EasyDict(dataset_kwargs, xflip=bool(mirror))


def plan_images(metrics, images, data, mirror, detector_urls, verbose) -> Evaluation:
    """--images: a folder or zip of images stands in for the generator."""
    needs_network = [metric for metric in metrics if metric in metric_main.NEEDS_NETWORK]
    if needs_network:
        raise click.UsageError(f'--metrics: {needs_network[0]} needs a network (--network); --images gives only '
                               f'images.')
    if data is None:
        raise click.UsageError('--images needs --data, the real images to compare with.')
    fakes = EasyDict(class_name=DATASET_CLASS, path=_local(images))
    open_checked(fakes, 'cannot use these images', '--images').close()
    reals = _mirrored(EasyDict(class_name=DATASET_CLASS, path=_local(data)), mirror)
    open_checked(reals, 'cannot use this dataset', '--data').close()
    return Evaluation(metrics, None, reals, fakes, detector_urls, None, None, verbose)


def plan_network(metrics, network, data, mirror, detector_urls, verbose, leader) -> Evaluation:
    """--network: generated images of the pickle's G_ema against --data or its training data."""
    network = _local(network)
    if leader and verbose:
        print(f'Loading network from "{network}"...')
    G, recorded = load_generator(network, verbose=verbose and leader)
    if data is None:
        reals = dataset_from_pickle(network, recorded)
        failure, hint = f'the training data recorded in {network} cannot be used here (give --data)', None
    else:
        reals = EasyDict(class_name=DATASET_CLASS, path=_local(data))
        failure, hint = 'cannot use this dataset', '--data'
    # As upstream: the reals at the generator's resolution, labelled when the generator is conditional.
    reals = _mirrored(EasyDict(reals, resolution=int(G.img_resolution), use_labels=int(G.c_dim) != 0), mirror)
    dataset = open_checked(reals, failure, hint)
    try:
        check_against_generator(dataset, G, f"the dataset '{reals.get('path')}'")
    finally:
        dataset.close()
    return Evaluation(metrics, G, reals, None, detector_urls, find_run_dir(network), network, verbose)


def plan(metrics, network, data, mirror, verbose, images, inception_url, vgg16_url, leader) -> Evaluation:
    """Check the flags and their files before any process starts; one sentence per problem."""
    metrics = parse_metric_list(metrics)
    if (network is None) == (images is None):
        raise click.UsageError('give either --network (a pickle to generate images with) or --images (a folder or '
                               'zip of images), not both or neither.')
    detector_urls = {kind: _local(url) for kind, url in (('inception', inception_url), ('vgg16', vgg16_url)) if url}
    if images is not None:
        return plan_images(metrics, images, data, mirror, detector_urls, verbose)
    return plan_network(metrics, network, data, mirror, detector_urls, verbose, leader)


# ---------------------------------------------------------------------------------------------
# Evaluation (in every process).

_RUN_ERRORS = (metric_streams.MetricError, DatasetError, OSError)


def evaluate(proc, job: Evaluation):
    try:
        for metric in job.metrics:
            if proc.rank == 0 and job.verbose:
                print(f'Evaluating {metric}...')
            result = metric_main.calc_metric(metric=metric, G=job.G, dataset_kwargs=job.dataset_kwargs,
                                             gen_dataset_kwargs=job.gen_dataset_kwargs,
                                             num_gpus=proc.world_size, rank=proc.rank, device=proc.device,
                                             progress=progress.ProgressMonitor(verbose=job.verbose),
                                             detector_urls=job.detector_urls)
            if proc.rank == 0:
                metric_main.report_metric(result, run_dir=job.run_dir, snapshot_pkl=job.snapshot_pkl)
    except _RUN_ERRORS as err:
        if job.notes_dir is None:
            raise click.ClickException(_one_line(err)) from None
        # A spawned process: the launching process only learns exit codes, and the other processes
        # fail too once this one stops answering collectives; leave the real reason for it to print.
        write_text(os.path.join(job.notes_dir, f'rank{proc.rank:05d}.txt'), _one_line(err))
        raise SystemExit(1) from None


def run_processes(job: Evaluation, gpus: int):
    if distributed.planned_world_size(gpus) == 1 or distributed.torchrun_world() is not None:
        distributed.launch(evaluate, num_procs=gpus, args=(job,))
        return
    with tempfile.TemporaryDirectory(prefix='calc_metrics-') as notes:
        job = dataclasses.replace(job, notes_dir=notes)
        try:
            distributed.launch(evaluate, num_procs=gpus, args=(job,))
        except (torch.multiprocessing.ProcessExitedException, torch.multiprocessing.ProcessRaisedException):
            reasons = [open(os.path.join(notes, name)).read() for name in sorted(os.listdir(notes))
                       if name.endswith('.txt')]
            if not reasons:
                raise       # not a user error: keep the traceback
            raise click.ClickException(reasons[0]) from None


# ---------------------------------------------------------------------------------------------
# Command line.


def _at_least_one(_ctx, param, value):
    if value < 1:
        raise click.BadParameter(f'{value} processes cannot compute anything; give 1 or more.', param=param)
    return value


@click.command()
@click.option('--network', 'network_pkl', metavar='PATH', help='Network pickle filename or URL')
@click.option('--metrics', default='fid50k_full', show_default=True, metavar='LIST',
              help='Comma-separated list or "none"')
@click.option('--data', metavar='PATH',
              help='Dataset to evaluate metrics against (directory, zip or builtin:NAME) [default: same as training '
                   'data]')
@click.option('--mirror', type=bool, metavar='BOOL', help='Whether the dataset was augmented with x-flips during training')
@click.option('--gpus', type=int, default=1, show_default=True, metavar='INT', callback=_at_least_one,
              help='Number of GPUs (CPU processes without CUDA) to use')
@click.option('--verbose', type=bool, default=True, show_default=True, metavar='BOOL',
              help='Print optional information')
@click.option('--images', metavar='PATH', help='Evaluate these images (directory or zip) instead of a network')
@click.option('--inception-url', metavar='URL',
              help="Inception detector for FID/KID/IS/FID levels (path or URL) [default: $STYLEFREQ_INCEPTION_URL or "
                   "upstream's URL]")
@click.option('--vgg16-url', metavar='URL',
              help="VGG16 detector for PR/PPL (path or URL) [default: $STYLEFREQ_VGG16_URL or upstream's URL]")
def calc_metrics(network_pkl, metrics, data, mirror, gpus, verbose, images, inception_url, vgg16_url):
    """Calculate quality metrics for previous training run or pretrained network pickle.

    \b
    Primary metrics (upstream): fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, is50k.
    Legacy metrics: fid50k, kid50k, pr50k3, ppl_zfull, ppl_wfull, ppl_zend, ppl_wend.
    Spectral metrics (stylefreq): specdisc (10k images), specdisc<N>k, fid_levels (50k), fid_levels<N>k.
    See README "Metrics" for their definitions.
    """
    torchrun = distributed.torchrun_world()
    leader = torchrun is None or torchrun[0] == 0
    job = plan(metrics, network_pkl, data, mirror, verbose, images, inception_url, vgg16_url, leader)
    num_procs = distributed.planned_world_size(gpus)
    if leader and verbose:
        print(f'Dataset options:  {json.dumps(job.dataset_kwargs, default=repr)}')
        print(f'Results to:       {job.run_dir or "stdout only"}')
        print(f'Processes:        {num_procs}')
    run_processes(job, gpus)


if __name__ == '__main__':
    calc_metrics()  # pylint: disable=no-value-for-parameter  (click fills the arguments)
