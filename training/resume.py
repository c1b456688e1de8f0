"""How a run continues: run directories, what a snapshot carries, and the resumable image stream.

A stylefreq snapshot (`network-snapshot-<kimg>.pkl`) holds upstream's keys (`training_set_kwargs`,
`G`, `D`, `G_ema`, `augment_pipe`) plus `progress`: images seen (`cur_nimg`), the next tick
(`cur_tick`), iterations done (`batch_idx`), both optimizers' state dicts (`G_opt`, `D_opt`) and
the path-length mean (`pl_mean`). ADA's p travels in `augment_pipe`; the dataset and the networks'
constructor arguments travel with `training_set_kwargs` and the networks themselves.

`--resume=X` means one of three things (README "Real resume"):
  * X is a run directory: continue in place from its latest snapshot with its training_options.json;
  * X is a stylefreq snapshot of the same dataset: continue (progress and optimizer state carry over)
    in a new run directory;
  * anything else (another dataset, an upstream pickle, a URL, a name such as ffhq256): fine-tune
    from the weights as upstream does (ada_kimg=100, no EMA ramp-up, counting from 0).
Weights are copied by tensor name; a tensor whose shape differs is an error naming both shapes.

Because a resumed run restarts its image stream at the number of images seen (`ImageStream`), it
trains on exactly the images the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import urllib.parse
import urllib.request

import numpy as np
import torch

from stylefreq import checkpoint, distributed, files
from stylefreq.kwargs import EasyDict

OPTIONS_FILE = 'training_options.json'
SNAPSHOT_NAME = re.compile(r'network-snapshot-(\d+)\.pkl')

# Upstream's published transfer-learning sources (StyleGAN2-ADA's train.py --resume names).
_TRANSFER_SOURCES = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/'
RESUME_URLS = {
    'ffhq256': _TRANSFER_SOURCES + 'ffhq-res256-mirror-paper256-noaug.pkl',
    'ffhq512': _TRANSFER_SOURCES + 'ffhq-res512-mirror-stylegan2-noaug.pkl',
    'ffhq1024': _TRANSFER_SOURCES + 'ffhq-res1024-mirror-stylegan2-noaug.pkl',
    'celebahq256': _TRANSFER_SOURCES + 'celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl',
    'lsundog256': _TRANSFER_SOURCES + 'lsundog-res256-paper256-kimg100000-noaug.pkl',
}
FINETUNE_ADA_KIMG = 100        # upstream's faster ADA adjustment when starting from other weights

PROGRESS_KEYS = ('cur_nimg', 'cur_tick', 'batch_idx', 'G_opt', 'D_opt', 'pl_mean')


class ResumeError(Exception):
    """A run cannot continue from what --resume names; the message is one sentence naming it."""


# ---------------------------------------------------------------------------------------------------
# What --resume names.

@dataclasses.dataclass(frozen=True)
class ResumeSource:
    kind: str            # 'name' | 'url' | 'file' | 'run_dir'
    location: str        # the URL or path to load (for a run directory: the directory)
    suffix: str          # run-directory suffix


def classify(spec: str) -> ResumeSource:
    """Interpret a --resume value without reading any file (ResumeError when it can never work)."""
    if spec in RESUME_URLS:
        return ResumeSource('name', RESUME_URLS[spec], f'-resume{spec}')
    scheme = urllib.parse.urlparse(spec).scheme.lower() if '://' in spec else ''
    if scheme in ('http', 'https'):
        return ResumeSource('url', spec, '-resumecustom')
    if scheme == 'file':
        spec = urllib.request.url2pathname(urllib.parse.urlparse(spec).path)
    elif scheme:
        raise ResumeError(f'--resume={spec}: unsupported URL scheme {scheme!r} (use a path, a run directory, '
                          f'file://, http://, https:// or one of {", ".join(RESUME_URLS)})')
    if os.path.isdir(spec):
        return ResumeSource('run_dir', spec, '')
    if not os.path.exists(spec):
        raise ResumeError(f'--resume={spec} does not exist')
    return ResumeSource('file', spec, '-resumecustom')


def snapshots(run_dir: str) -> list:
    """The snapshot file names in `run_dir`, oldest (lowest kimg) first."""
    found = [(int(m.group(1)), name) for name in os.listdir(run_dir) if (m := SNAPSHOT_NAME.fullmatch(name))]
    return [name for _kimg, name in sorted(found)]


def latest_snapshot(run_dir: str) -> str:
    if not os.path.isfile(os.path.join(run_dir, OPTIONS_FILE)):
        raise ResumeError(f'--resume={run_dir} is not a run directory (it has no {OPTIONS_FILE})')
    names = snapshots(run_dir)
    if not names:
        raise ResumeError(f'--resume={run_dir} has no network-snapshot-*.pkl to continue from')
    return os.path.join(run_dir, names[-1])


def read_run_options(run_dir: str) -> EasyDict:
    """The training options a run directory was started with (its training_options.json)."""
    path = os.path.join(run_dir, OPTIONS_FILE)
    try:
        with open(path, encoding='utf-8') as f:
            options = json.load(f, object_hook=EasyDict)
    except (OSError, ValueError) as err:
        raise ResumeError(f'{path} cannot be read as training options ({err})') from None
    required = ('training_set_kwargs', 'G_kwargs', 'D_kwargs', 'num_gpus', 'batch_size', 'batch_gpu', 'total_kimg')
    absent = [key for key in required if not isinstance(options, dict) or key not in options]
    if absent:
        raise ResumeError(f'{path} lacks {", ".join(absent)}, so the run cannot be continued from it')
    return options


# ---------------------------------------------------------------------------------------------------
# Reading a snapshot.

def load_snapshot(location: str) -> dict:
    """checkpoint.load_network_pkl with every failure as a ResumeError naming the file."""
    try:
        return checkpoint.load_network_pkl(location, verbose=distributed.get_rank() == 0)
    except (checkpoint.CheckpointError, OSError, ValueError) as err:
        raise ResumeError(str(err)) from None


def _image_shape(net):
    if isinstance(net, torch.nn.Module):
        res, channels = getattr(net, 'img_resolution', None), getattr(net, 'img_channels', None)
    else:
        init = getattr(net, 'init_kwargs', None) or {}
        res, channels = init.get('img_resolution'), init.get('img_channels')
    return None if res is None or channels is None else [int(channels), int(res), int(res)]


def check_image_shape(data: dict, location: str, image_shape) -> None:
    """Refuse a checkpoint made for another image size or channel count, before any tensor is copied."""
    for key in ('G', 'G_ema', 'D'):
        made_for = _image_shape(data.get(key)) if data.get(key) is not None else None
        if made_for is not None and made_for != list(image_shape):
            raise ResumeError(f'cannot resume {key} from {location}: it was made for images of shape {made_for} '
                              f'but the training set has shape {list(image_shape)}')


def resumable_progress(data: dict) -> dict | None:
    """The snapshot's progress record if it has a complete one (stylefreq snapshots), else None."""
    progress = data.get('progress')
    if not isinstance(progress, dict) or any(key not in progress for key in PROGRESS_KEYS):
        return None
    return progress


def same_dataset(a, b) -> bool:
    """Whether two training_set_kwargs paths name the same data (local paths compared resolved)."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    if os.path.exists(a) and os.path.exists(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return a == b


# ---------------------------------------------------------------------------------------------------
# Copying weights.

def _tensors(obj) -> dict:
    if isinstance(obj, torch.nn.Module):
        return dict(list(obj.named_parameters()) + list(obj.named_buffers()))
    return dict(obj.tensors())          # an upstream network the loader kept as a record


def _shape(t) -> str:
    return '[' + ', '.join(str(n) for n in t.shape) + ']'


def _source_name(name, source, dst_prefixes, src_prefixes):
    """The checkpoint's name for the target tensor `name`, or None.

    Wrappers (SSDDiscriminator, ...) declare `inner_prefixes`: the wrapped network's tensors live
    under them, so a plain network's checkpoint fills a wrapper and the other way round.
    """
    bare = [name] + [name[len(p):] for p in dst_prefixes if name.startswith(p)]
    for candidate in bare + [p + b for b in bare for p in src_prefixes]:
        if candidate in source:
            return candidate
    return None


@torch.no_grad()
def copy_weights(src, dst: torch.nn.Module, what: str) -> list:
    """Copy `src`'s parameters and buffers into `dst` by name; return the names of dst's tensors
    the source does not have (they keep their values). A shape mismatch is a ResumeError. The
    resampling filters (`resample_filter` buffers) are not copied: they are what the options chose
    (e.g. --d-antialias), so a checkpoint made with D's low-pass can be fine-tuned without it."""
    source = _tensors(src)
    src_prefixes = tuple(getattr(src, 'inner_prefixes', ()))
    dst_prefixes = tuple(getattr(dst, 'inner_prefixes', ()))
    missing = []
    for name, target in _tensors(dst).items():
        if name.rsplit('.', 1)[-1] == 'resample_filter':
            continue
        found = _source_name(name, source, dst_prefixes, src_prefixes)
        if found is None:
            missing.append(name)
            continue
        value = source[found]
        if value.shape != target.shape:
            raise ResumeError(f'cannot resume {what}: {name} has shape {_shape(value)} in the checkpoint but '
                              f'{_shape(target)} in the network being trained')
        target.copy_(value)
    return missing


def restore_networks(data: dict, location: str, networks: dict, image_shape) -> None:
    """Copy every network the checkpoint has into `networks` ({'G': G, ...}); prints what stayed."""
    check_image_shape(data, location, image_shape)
    for what, net in networks.items():
        source = data.get(what)
        if source is None and what == 'G_ema':
            source = data.get('G')          # a pickle without an average starts the average at G
        if net is None:
            continue
        if source is None:
            print(f'{what}: not in {location}; it starts from its initial weights')
            continue
        missing = copy_weights(source, net, what)
        if missing:
            print(f'{what}: {len(missing)} tensors not in the checkpoint keep their initial values')


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict, what: str, location: str) -> None:
    """Continue an optimizer's moments and step counts; its learning rate and betas stay this run's."""
    keep = [{k: v for k, v in group.items() if k != 'params'} for group in opt.param_groups]
    try:
        opt.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as err:
        raise ResumeError(f'cannot resume {what} from {location}: the optimizer state does not fit the network '
                          f'being trained ({err})') from None
    for group, hyper in zip(opt.param_groups, keep):
        group.update(hyper)


def state_to_cpu(obj):
    """A copy of a (nested) optimizer state dict with every tensor on the CPU, for a snapshot."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: state_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(state_to_cpu(v) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------------
# Run directories.

def open_run_dir(run_dir: str, options: dict) -> files.DirectoryLock:
    """Create (or reopen) a run directory for training: lock it, clear what killed writers left
    behind, and record the options. Returns the held lock."""
    os.makedirs(run_dir, exist_ok=True)
    lock = files.DirectoryLock(run_dir, what='run directory').acquire()
    try:
        removed = files.remove_partial_files(run_dir)
        if removed:
            print(f'Removed {len(removed)} partial files left by an interrupted run')
        files.write_text(os.path.join(run_dir, OPTIONS_FILE), json.dumps(options, indent=2))
    except BaseException:
        lock.release()
        raise
    return lock


class SharedError(Exception):
    """An error rank 0 met while every process waited; raised on every process (see `on_rank0`)."""


def on_rank0(fn, errors=(ResumeError, checkpoint.CheckpointError, files.LockError, OSError)):
    """Run `fn` on rank 0 only; if it raises one of `errors`, every process raises SharedError with
    its message (instead of the other ranks waiting forever). Returns fn's result on rank 0, else None."""
    result, message = None, None
    if distributed.get_rank() == 0:
        try:
            result = fn()
        except errors as err:
            message = str(err)
            if distributed.get_world_size() == 1:
                raise
    message = distributed.broadcast_object(message)
    if message is not None:
        raise SharedError(message)
    return result


# ---------------------------------------------------------------------------------------------------
# The image stream.

class ImageStream(torch.utils.data.Sampler):
    """Dataset indices for one process, an endless stream that can start at any image.

    The run's stream is a sequence of epochs, each a permutation of the dataset drawn from
    (seed, epoch); position n is the n-th image the whole run trains on. Process `rank` of
    `num_procs` takes positions start + rank, start + rank + num_procs, ... so one iteration of a
    global batch B covers positions [n, n + B) whatever the number of processes, and a run resumed
    after n images continues exactly where it stopped.
    """

    def __init__(self, size: int, rank: int = 0, num_procs: int = 1, seed: int = 0, start: int = 0):
        if size < 1:
            raise ValueError('ImageStream: the dataset is empty')
        if not 0 <= rank < num_procs:
            raise ValueError(f'ImageStream: rank {rank} is outside 0..{num_procs - 1}')
        self.size, self.rank, self.num_procs = int(size), int(rank), int(num_procs)
        self.seed, self.start = int(seed), int(start)
        self._epoch, self._order = None, None

    def index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return int(self._order[offset])

    def __iter__(self):
        position = self.start + self.rank
        while True:
            yield self.index(position)
            position += self.num_procs
