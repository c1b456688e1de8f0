"""Calculate quality metrics for a network pickle (stylefreq or upstream StyleGAN2-ADA), as upstream's
calc_metrics.py, plus stylefreq's spectral metrics.

    python calc_metrics.py --metrics=fid50k_full,specdisc --network=runs/00000-ffhq/network-snapshot-000100.pkl
    python calc_metrics.py --metrics=fid_levels10k --network=https://.../ffhq.pkl --data=~/datasets/ffhq256.zip
    python calc_metrics.py --metrics=fid50k_full --images=~/samples.zip --data=~/datasets/ffhq256.zip

Results go to `metric-<name>.jsonl` in the pickle's directory when that directory is a training run
(it has training_options.json), else to stdout only; figures (specdisc, fid_levels) go beside the
jsonl, or to the current directory.
"""

import copy
import os
import sys
import tempfile

import click
import torch
import torch.distributed as dist

from metrics import metric_main, metric_utils
from stylefreq import checkpoint
from stylefreq.kwargs import EasyDict


class UserError(Exception):
    pass


def _dataset_kwargs(data, network_data, G, mirror):
    """Dataset options: --data, else the pickle's training_set_kwargs; resolution/labels from G."""
    if data is not None:
        kwargs = EasyDict(class_name='training.dataset.ImageFolderDataset', path=data)
    elif network_data is not None and network_data.get('training_set_kwargs'):
        kwargs = EasyDict(network_data['training_set_kwargs'])
    else:
        raise UserError('could not look up the dataset options in the network pickle; give --data')
    if G is not None:
        kwargs.resolution = int(G.img_resolution)
        kwargs.use_labels = int(getattr(G, 'c_dim', 0)) != 0
    if mirror is not None:
        kwargs.xflip = bool(mirror)
    try:
        dataset = metric_utils.open_dataset(kwargs)
    except metric_utils.MetricError as e:
        where = '--data' if data is not None else "the pickle's training_set_kwargs (give --data)"
        raise UserError(f'{where}: {e}') from None
    if G is not None and dataset.num_channels != G.img_channels:
        raise UserError(f'dataset {dataset.name} has {dataset.num_channels} channels, the network makes '
                        f'{G.img_channels}')
    return kwargs


def _load_network(network, verbose):
    try:
        path = checkpoint.open_url(network, return_filename=True, verbose=verbose)
        data = checkpoint.load_network_pkl(path, verbose=verbose)
    except (OSError, checkpoint.CheckpointError) as e:
        raise UserError(f'--network: {e}') from None
    G = data.get('G_ema')
    if not isinstance(G, torch.nn.Module):
        raise UserError(f'--network: {network} holds no generator (G_ema) that stylefreq can run')
    return path, data, G.eval().requires_grad_(False)


def _threads_per_process(num_procs):
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_procs))


def run_metrics(rank, args, temp_dir=None, G=None):
    """Evaluate args.metrics in one process (rank) of args.num_gpus; rank 0 reports. G: the loaded
    generator (spawned processes load it again from args.network_path)."""
    own_group = False
    if args.num_gpus > 1 and not dist.is_initialized():
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        if torch.cuda.is_available():
            torch.cuda.set_device(rank)
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        dist.init_process_group(backend=backend, init_method=f'file://{init_file}', rank=rank,
                                world_size=args.num_gpus)
        own_group = True
    if args.spawned:
        _threads_per_process(args.num_gpus)
    device = torch.device('cuda', args.local_rank if args.local_rank is not None else rank) \
        if torch.cuda.is_available() else torch.device('cpu')
    if G is None and args.network_path is not None:
        G = checkpoint.load_network_pkl(args.network_path, verbose=False)['G_ema'].eval().requires_grad_(False)
    progress = metric_utils.ProgressMonitor(verbose=args.verbose)
    try:
        for metric in args.metrics:
            if rank == 0 and args.verbose:
                print(f'Calculating {metric}...')
            result = metric_main.calc_metric(metric=metric, G=G, dataset_kwargs=copy.deepcopy(args.dataset_kwargs),
                                             gen_dataset_kwargs=copy.deepcopy(args.gen_dataset_kwargs),
                                             num_gpus=args.num_gpus, rank=rank, device=device, progress=progress,
                                             detector_urls=args.detector_urls)
            if rank == 0:
                metric_main.report_metric(result, run_dir=args.run_dir, snapshot_pkl=args.network_pkl)
    finally:
        if own_group:
            dist.destroy_process_group()


def _subprocess_fn(rank, args, temp_dir):
    try:
        run_metrics(rank, args, temp_dir)
    except (metric_utils.MetricError, UserError, OSError, ValueError) as e:
        print(f'Error: {e}', file=sys.stderr)
        sys.exit(1)


class CommaSeparatedList(click.ParamType):
    name = 'list'

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        if value is None or value.lower() == 'none' or value == '':
            return []
        return [v.strip() for v in value.split(',') if v.strip()]


@click.command()
@click.pass_context
@click.option('network_pkl', '--network', help='Network pickle filename or URL', metavar='PATH')
@click.option('--metrics', help='Comma-separated list or "none"', type=CommaSeparatedList(), default='fid50k_full',
              show_default=True)
@click.option('--data', help='Dataset to evaluate metrics against (directory, zip or builtin:NAME) [default: same as '
              'training data]', metavar='PATH')
@click.option('--mirror', help='Whether the dataset was augmented with x-flips during training', type=bool,
              metavar='BOOL')
@click.option('--gpus', help='Number of GPUs (CPU processes without CUDA) to use', type=int, default=1, metavar='INT',
              show_default=True)
@click.option('--verbose', help='Print optional information', type=bool, default=True, metavar='BOOL',
              show_default=True)
@click.option('--images', help='Evaluate these images (directory or zip) instead of a network', metavar='PATH')
@click.option('--inception-url', metavar='URL', help='Inception detector for FID/KID/IS/FID levels (path or URL) '
              f'[default: ${metric_utils.DETECTOR_ENV["inception"]} or upstream\'s URL]')
@click.option('--vgg16-url', metavar='URL', help='VGG16 detector for PR/PPL (path or URL) '
              f'[default: ${metric_utils.DETECTOR_ENV["vgg16"]} or upstream\'s URL]')
def calc_metrics(ctx, network_pkl, metrics, data, mirror, gpus, verbose, images, inception_url, vgg16_url):
    """Calculate quality metrics for previous training run or pretrained network pickle.

    \b
    Primary metrics (upstream): fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, is50k.
    Legacy metrics: fid50k, kid50k, pr50k3, ppl_zfull, ppl_wfull, ppl_zend, ppl_wend.
    Spectral metrics (stylefreq): specdisc (10k images), specdisc<N>k, fid_levels (50k), fid_levels<N>k.
    See README "Metrics" for their definitions.
    """
    torchrun = 'RANK' in os.environ and 'WORLD_SIZE' in os.environ
    rank = int(os.environ['RANK']) if torchrun else 0
    verbose = verbose and rank == 0

    bad = [m for m in metrics if not metric_main.is_valid_metric(m)]
    if bad:
        ctx.fail(f'--metrics: unknown metric{"s" if len(bad) > 1 else ""} {", ".join(bad)}; valid: '
                 f'{metric_main.describe_valid_metrics()}')
    if not metrics:
        ctx.fail('--metrics: nothing to compute')
    if gpus < 1:
        ctx.fail('--gpus must be at least 1')
    if torch.cuda.is_available() and gpus > torch.cuda.device_count() and not torchrun:
        ctx.fail(f'--gpus={gpus} but only {torch.cuda.device_count()} CUDA devices are visible')
    if (network_pkl is None) == (images is None):
        ctx.fail('give either --network or --images')

    args = EasyDict(metrics=metrics, num_gpus=gpus, verbose=verbose, network_pkl=None, network_path=None,
                    run_dir=None, gen_dataset_kwargs=None, spawned=False, local_rank=None,
                    detector_urls={k: v for k, v in dict(inception=inception_url, vgg16=vgg16_url).items() if v})
    try:
        G = network_data = None
        if network_pkl is not None:
            if verbose:
                print(f'Loading network from "{network_pkl}"...')
            args.network_path, network_data, G = _load_network(network_pkl, verbose)
            args.network_pkl = network_pkl
        else:
            if data is None:
                raise UserError('--images needs --data (the real images to compare with)')
            gen = EasyDict(class_name='training.dataset.ImageFolderDataset', path=images)
            try:
                metric_utils.open_dataset(gen)
            except metric_utils.MetricError as e:
                raise UserError(f'--images: {e}') from None
            args.gen_dataset_kwargs = gen
            for m in metrics:
                if m.startswith('ppl'):
                    raise UserError(f'--metrics: {m} needs a network (--network), not --images')
        args.dataset_kwargs = _dataset_kwargs(data, network_data, G, mirror)
    except UserError as e:
        ctx.fail(str(e))

    if network_pkl is not None and os.path.isfile(network_pkl):
        pkl_dir = os.path.dirname(os.path.abspath(network_pkl))
        if os.path.isfile(os.path.join(pkl_dir, 'training_options.json')):
            args.run_dir = pkl_dir

    if verbose:
        print(f'Dataset options:  {dict(args.dataset_kwargs)}')
        print(f'Results to:       {args.run_dir if args.run_dir else "stdout"}')
        print('Launching processes...')

    try:
        if torchrun:
            world = int(os.environ['WORLD_SIZE'])
            if gpus not in (1, world):
                ctx.fail(f'--gpus={gpus} disagrees with torchrun\'s world size {world}')
            args.num_gpus = world
            args.local_rank = int(os.environ.get('LOCAL_RANK', 0))
            if torch.cuda.is_available():
                torch.cuda.set_device(args.local_rank)
            dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo', init_method='env://')
            try:
                run_metrics(rank, args, G=G)
            finally:
                dist.destroy_process_group()
        elif gpus == 1:
            run_metrics(0, args, G=G)
        else:
            args.spawned = True
            torch.multiprocessing.set_start_method('spawn', force=True)
            with tempfile.TemporaryDirectory() as temp_dir:
                try:
                    torch.multiprocessing.spawn(fn=_subprocess_fn, args=(args, temp_dir), nprocs=gpus)
                except torch.multiprocessing.ProcessExitedException:
                    raise click.ClickException('a metric process failed (its message is above)') from None
    except (metric_utils.MetricError, OSError) as e:
        raise click.ClickException(str(e)) from None


if __name__ == '__main__':
    calc_metrics()
