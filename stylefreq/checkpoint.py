"""Network pickles: stylefreq snapshots written atomically, and upstream or stylefreq pickles loaded
without running code from them.

    data = load_network_pkl('network-snapshot-000100.pkl')    # path, file:// or http(s):// URL
    G = data['G_ema']

Loading (see stylefreq.safe_pickle and stylefreq.records for the mechanisms):
1. the file is unpickled with an allow-list of globals; networks come back as inert records;
2. the structure is checked (depth, cycles, expansion through shared references, tensor bytes
   against the file size) before anything else happens;
3. every network record in the file is checked against the class registry, nested class names
   included, before any network is constructed;
4. each network is constructed on the meta device within a budget, compared with the record's
   tensor table and given the file's tensors.
Every refusal is a CheckpointError whose message is one sentence naming the file.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import types
import warnings

import numpy as np
import torch

from stylefreq import files, persistence, records, safe_pickle
from stylefreq.download import open_url
from stylefreq.kwargs import EasyDict
from stylefreq.safe_pickle import (CheckpointError, OwnRecord, ReferencedModule, UnsafePickleError,  # noqa: F401
                                   UnsupportedPickleError, UpstreamObject)

__all__ = ['CheckpointError', 'UnsafePickleError', 'UnsupportedPickleError', 'RebuildError', 'UpstreamObject',
           'save_network_pkl', 'load_network_pkl']

NETWORK_KEYS = ('G', 'D', 'G_ema', 'augment_pipe')


class RebuildError(CheckpointError, ValueError):
    """A network could not be rebuilt from a checkpoint (constructor failed, tensor names/shapes differ)."""


# ---------------------------------------------------------------------------------------------------
# Saving.

def _rebuild_module(record):
    """The callable stylefreq snapshots name for a network record. Never called when loading (the
    safe unpickler maps this name to an inert OwnRecord); it only gives the record a global name."""
    raise RuntimeError('stylefreq network records are read with stylefreq.checkpoint.load_network_pkl')


def _global_name(obj):
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', None)}"


# Objects the pickler may meet while writing a snapshot (besides the atomic types it never shows us),
# and the globals it may name: exactly what the safe unpickler reads back.
_SAVE_TYPES = (dict, list, tuple, set, frozenset, collections.OrderedDict, EasyDict, torch.Size, torch.device,
               torch.dtype, torch.storage.TypedStorage, torch.UntypedStorage, np.ndarray, np.generic, np.dtype)
_SAVE_GLOBALS = frozenset(safe_pickle.SafeUnpickler(io.BytesIO())._globals) - {
    safe_pickle.UPSTREAM_REBUILD, 'dnnlib.util.EasyDict', 'copyreg._reconstructor', 'builtins.object'}


class _SnapshotPickler(pickle.Pickler):
    """Writes persistent networks as records and refuses anything the safe unpickler would not read back."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.nn.Module):
            try:
                return (_rebuild_module, (records.write_record(obj),))
            except records.RecordError as e:
                raise ValueError(f'cannot save {e}') from None
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            if _global_name(obj) in _SAVE_GLOBALS:
                return NotImplemented
            raise ValueError(f'cannot save {_global_name(obj)} in a network pickle: load_network_pkl would '
                             f'refuse to load it')
        if isinstance(obj, torch.Tensor):
            if type(obj) not in (torch.Tensor, torch.nn.Parameter):
                raise ValueError(f'cannot save a {type(obj).__name__} in a network pickle: only plain tensors '
                                 f'and parameters')
            return NotImplemented
        if isinstance(obj, _SAVE_TYPES):
            return NotImplemented
        raise ValueError(f'cannot save {type(obj).__module__}.{type(obj).__qualname__} in a network pickle: '
                         f'only plain data (dicts, lists, numbers, strings), tensors, numpy arrays and '
                         f'persistent networks can be stored')


def save_network_pkl(path, data: dict, protocol: int = 4) -> None:
    """Write a snapshot dict atomically (a crash leaves the previous file, never a partial one).

    Persistent networks anywhere in `data` are stored as records (class name, constructor
    arguments, tensors); other values must be plain data, tensors or numpy arrays.
    """
    if not isinstance(data, dict):
        raise TypeError(f'save_network_pkl: data must be a dict, got {type(data).__name__}')
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f'cannot write {path}: directory {directory} does not exist')
    with files.atomic_write(path, 'wb') as f:
        _SnapshotPickler(f, protocol=protocol).dump(data)


# ---------------------------------------------------------------------------------------------------
# Loading.

def _file_size(f):
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        pass
    try:
        pos = f.tell()
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(pos)
        return size
    except (AttributeError, OSError, ValueError):
        return None


def _network_slots(data):
    """(container, key) of every inert network that is not inside another network, in the data
    tree (structure already checked: bounded, acyclic)."""
    slots, stack, seen = [], [data], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            if isinstance(value, (OwnRecord, UpstreamObject, ReferencedModule)):
                slots.append((node, key, value))
            elif isinstance(value, (dict, list)):
                stack.append(value)
    return slots


def _build_networks(data, source):
    slots = _network_slots(data)
    specs = {}
    # Every record is checked before any network is constructed: a file cannot slip a hostile
    # record in beside a valid network.
    for _, key, inert in slots:
        if id(inert) in specs:
            continue
        try:
            spec = records.spec_of(inert)
            if spec is not None:
                records.check_spec(spec)
        except records.UnsafeRecordError as e:
            raise UnsafePickleError(f'{source}: {e}') from None
        except (records.RecordError, UnsupportedPickleError) as e:
            raise UnsupportedPickleError(f'{source}: {key!r}: {e}') from None
        specs[id(inert)] = spec
    built, used_storages = {}, set()
    for container, key, inert in slots:
        spec = specs[id(inert)]
        if spec is None:                 # an upstream class without a stylefreq counterpart: kept inert
            warnings.warn(f'{source}: {key!r} is an upstream {inert.class_name}, for which no stylefreq class is '
                          f'registered; it is returned as an UpstreamObject (class_name, init_kwargs, tensors())',
                          stacklevel=4)
            container[key] = inert
            continue
        if id(inert) not in built:      # a network stored under two keys stays one object
            try:
                built[id(inert)] = records.build(spec, used_storages)
            except records.UnsafeRecordError as e:
                raise UnsafePickleError(f'{source}: {e}') from None
            except records.RecordError as e:
                raise RebuildError(f'{source}: {key!r}: {e}') from None
        container[key] = built[id(inert)]


def _load(f, source):
    data = safe_pickle.load(f, source, _file_size(f))
    if not isinstance(data, dict):
        raise UnsupportedPickleError(f'{source} is not a network pickle: it holds a {type(data).__name__} '
                                     f'instead of a dict of networks')
    _build_networks(data, source)
    return data


def load_network_pkl(f, force_fp16=False, verbose=True):
    """Load a network pickle (upstream StyleGAN2-ADA-PyTorch or stylefreq) without executing code from it.

    `f`: an open binary file, a path or a URL (see stylefreq.download.open_url). Returns a dict with
    at least G, D, G_ema, training_set_kwargs and augment_pipe (None when absent) plus any other
    keys in the file. Networks are in eval mode, on the CPU, without gradients. An upstream network
    without a stylefreq counterpart stays an `UpstreamObject`. `force_fp16=True` rebuilds G, D and
    G_ema with num_fp16_res=4, conv_clamp=256 (as upstream's legacy.load_network_pkl does).
    """
    if isinstance(f, (str, os.PathLike)):
        source = os.fspath(f)
        try:
            with open_url(source, verbose=verbose) as fh:
                data = _load(fh, source)
        except ValueError as e:                       # unsupported URL scheme
            if isinstance(e, CheckpointError):
                raise
            raise UnsupportedPickleError(str(e)) from None
    else:
        source = getattr(f, 'name', None) or '<network pickle>'
        data = _load(f, source)

    for key in ('training_set_kwargs',) + NETWORK_KEYS:
        data.setdefault(key, None)
    for key in NETWORK_KEYS:
        if not isinstance(data[key], (torch.nn.Module, UpstreamObject, type(None))):
            raise UnsupportedPickleError(f'{source} is not a network pickle: {key!r} is a '
                                         f'{type(data[key]).__name__}, not a network')
    if not isinstance(data['training_set_kwargs'], (dict, type(None))):
        raise UnsupportedPickleError(f"{source} is not a network pickle: 'training_set_kwargs' is a "
                                     f"{type(data['training_set_kwargs']).__name__}, not a dict")
    if force_fp16:
        for key in ('G', 'D', 'G_ema'):
            if data[key] is not None:
                data[key] = _with_fp16(data[key], key, source)
    return data


def _with_fp16(module, key, source):
    if isinstance(module, UpstreamObject) or not persistence.is_persistent(module):
        raise RebuildError(f'{source}: force_fp16 needs {key!r} to be a stylefreq network, '
                           f'got {type(module).__name__}')
    kwargs = persistence.init_kwargs_of(module)
    if key.startswith('G'):
        synthesis_kwargs = dict(kwargs.get('synthesis_kwargs') or {})
        synthesis_kwargs.update(num_fp16_res=4, conv_clamp=256)
        kwargs['synthesis_kwargs'] = synthesis_kwargs
    else:
        kwargs.update(num_fp16_res=4, conv_clamp=256)
    if kwargs == persistence.init_kwargs_of(module):
        return module
    spec = records.Spec(persistence.class_name_of(module), persistence.init_args_of(module), kwargs,
                        records.tensors_of(module), key)
    try:
        return records.build(spec)
    except records.RecordError as e:
        raise RebuildError(f'{source}: {e}') from None
