"""Export stylefreq networks as pickles that a stock StyleGAN2-ADA-PyTorch checkout loads.

    python -m stylefreq.export --network=network-snapshot-000100.pkl --dest=upstream.pkl

The result is what upstream's training loop writes: a pickled dict with `G`, `D`, `G_ema`,
`augment_pipe` (always None: the augmentation pipeline is a training-time object and is not
exported) and `training_set_kwargs`, where every network is an upstream persistent object
(torch_utils.persistence, version 6):

    (torch_utils.persistence._reconstruct_persistent_obj, (meta,)),
    meta = dict(type='class', version=6, module_src=<source>, class_name=<name>, state=<dict>)

so `legacy.load_network_pkl` of an unmodified checkout accepts it, and so does
`stylefreq.checkpoint.load_network_pkl` (which never executes `module_src`).

What the pickle embeds (`module_src`) is stylefreq's own code only, never upstream's: the source
of stylefreq's `training/networks.py` (upstream-compatible parameter names, stylefreq's
implementation) followed by two lines that call `install_shims` below. The networks import
`stylefreq.ops`, and the wrappers (`FrequencyShiftedGenerator`, `SSDDiscriminator`) live in
`stylefreq.freqshift` / `stylefreq.ssd`, so **stylefreq must be installed (importable) wherever
the exported pickle is loaded**. That is the trade-off chosen: embedding all of stylefreq (ops,
spectral, wrappers) would make the pickle independent of an installation, but it would freeze a
second copy of the library into every file, exactly the source-embedding design stylefreq leaves
behind; a missing installation fails with a plain `No module named 'stylefreq'`.

`state` is not a module `__dict__` but stylefreq's network record (stylefreq.records: class name,
constructor arguments, flat name -> tensor dict), the same one stylefreq snapshots hold. When
upstream unpickles it, the class in `module_src` (a
subclass of the stylefreq network) rebuilds the network from that record in `__setstate__`, and
`__reduce__` writes the same kind of record again, so upstream code that deep-copies or re-pickles
the network keeps working. Inside the checkout the embedded networks are reached through
`stylefreq.kwargs.class_name_aliases`, because there the name `training.networks` is upstream's.
"""

from __future__ import annotations

import argparse
import inspect
import io
import os
import pickle
import sys

import torch

from stylefreq import checkpoint, files, records
from stylefreq import kwargs as sf_kwargs
from stylefreq.safe_pickle import plain

__all__ = ['ExportError', 'EXPORT_MARKER', 'install_shims', 'export_network_pkl', 'exported_module_src', 'main']

UPSTREAM_PERSISTENCE_VERSION = 6
ENGINE_MODULE = 'training.networks'
EXPORT_MARKER = '# stylefreq-export: the lines below define the classes an upstream checkout unpickles'
_SHIM_TAIL = f'''

{EXPORT_MARKER}
import stylefreq.export as _stylefreq_export
_stylefreq_export.install_shims(globals())
'''
# The wrapper classes an exported pickle may name (meta class_name -> stylefreq class).
WRAPPER_CLASSES = {
    'FrequencyShiftedGenerator': 'stylefreq.freqshift.FrequencyShiftedGenerator',
    'SSDDiscriminator': 'stylefreq.ssd.SSDDiscriminator',
}
NETWORK_KEYS = ('G', 'D', 'G_ema')


class ExportError(ValueError):
    """A network cannot be exported (one sentence naming the network and the reason)."""


# ------------------------------------------------------------------------------------------------
# The record stored as `state`, and rebuilding from it (used on both sides).


def _stylefreq_class_name(net, engine_classes):
    """'training.networks.Generator', 'stylefreq.ssd.SSDDiscriminator', ... for a network or its shim."""
    engine = {id(c): n for n, c in engine_classes.items()}
    for cls in type(net).__mro__:
        if id(cls) in engine:
            return f'{ENGINE_MODULE}.{engine[id(cls)]}'
        if cls.__module__.startswith('stylefreq.') and getattr(cls, '_stylefreq_persistent', False):
            return f'{cls.__module__}.{cls.__qualname__}'
    raise ExportError(f'{type(net).__name__} is neither a stylefreq network nor a stylefreq wrapper')


def _record(net, engine_classes) -> dict:
    try:
        return records.write_record(net, class_name=_stylefreq_class_name(net, engine_classes))
    except records.RecordError as e:
        raise ExportError(str(e)) from None


def _rebuild(state, engine_classes):
    """A fresh stylefreq network from an exported record, inside an upstream checkout (where the
    engine classes are the ones exec'd from module_src, reached through aliases)."""
    spec = records.spec_of_record(state)
    aliases = {f'{ENGINE_MODULE}.{n}': c for n, c in engine_classes.items()}
    with sf_kwargs.class_name_aliases(aliases):
        net = sf_kwargs.get_obj_by_name(spec.class_name)(*spec.init_args, **spec.init_kwargs)
    own = dict(net.named_parameters())
    own.update(net.named_buffers())
    if set(own) != set(spec.tensors):
        missing = sorted(set(own) - set(spec.tensors))[:3]
        extra = sorted(set(spec.tensors) - set(own))[:3]
        raise RuntimeError(f'exported {spec.class_name}: tensors do not match the rebuilt network '
                           f'(missing {missing}, unexpected {extra})')
    with torch.no_grad():
        for name, dst in own.items():
            dst.copy_(spec.tensors[name])
    net.train(bool(state.get('training', False))).requires_grad_(False)
    return net


class _ExportedNetwork:
    """Mixin of the classes in an exported `module_src`: (re)build from / write the record."""

    _stylefreq_engine = {}

    def __setstate__(self, state):
        net = _rebuild(state, type(self)._stylefreq_engine)
        self.__dict__.update(net.__dict__)

    def __reduce__(self):
        # Upstream's persistence decorator calls this and moves the third field into meta['state'].
        return (object.__new__, (type(self),), _record(self, type(self)._stylefreq_engine))


def install_shims(namespace: dict):
    """Called at the end of an exported `module_src` with the exec'd module's globals.

    The engine classes are the persistent classes defined by the embedded networks source; the
    top-level ones that a pickle names (`Generator`, `Discriminator`, and the stylefreq wrappers)
    are replaced by subclasses that add `_ExportedNetwork`'s `__setstate__` / `__reduce__`.
    """
    module_name = namespace['__name__']
    engine = {n: c for n, c in list(namespace.items())
              if isinstance(c, type) and c.__module__ == module_name and getattr(c, '_stylefreq_persistent', False)}
    bases = {n: engine[n] for n in ('Generator', 'Discriminator') if n in engine}
    for name, dotted in WRAPPER_CLASSES.items():
        bases[name] = sf_kwargs.get_obj_by_name(dotted)
    for name, base in bases.items():
        shim = type(name, (_ExportedNetwork, base), {'__module__': module_name, '__qualname__': name,
                                                      '_stylefreq_engine': engine})
        namespace[name] = shim


# ------------------------------------------------------------------------------------------------
# Writing.


def _engine_module_of(nets):
    """The one non-stylefreq module whose classes the networks use (stylefreq's training.networks)."""
    modules = {}
    for key, net in nets.items():
        for m in net.modules():
            cls = type(m)
            mod = cls.__module__
            if mod.startswith('stylefreq.') or mod.startswith('torch.'):
                continue
            if not getattr(cls, '_stylefreq_persistent', False):
                raise ExportError(f'{key}: submodule class {mod}.{cls.__qualname__} is not a stylefreq class '
                                  f'(networks trained inside an upstream checkout hold upstream code and '
                                  f'cannot be exported)')
            modules[mod] = sys.modules[mod]
    if set(modules) != {ENGINE_MODULE}:
        raise ExportError(f'expected the networks to use stylefreq\'s {ENGINE_MODULE} classes, found modules '
                          f'{sorted(modules)}')
    return modules[ENGINE_MODULE]


def exported_module_src(engine_module) -> str:
    src = inspect.getsource(engine_module)
    if 'NVIDIA' in src or 'stylefreq' not in src:
        raise ExportError(f'{engine_module.__file__} is not stylefreq\'s networks source; refusing to embed it')
    return src.rstrip('\n') + '\n' + _SHIM_TAIL


class _Reconstruct:
    """Stands for upstream's `torch_utils.persistence._reconstruct_persistent_obj` in the written pickle."""


class _ExportPickler(pickle._Pickler):
    """Writes networks as upstream persistent objects without importing upstream's torch_utils."""

    def __init__(self, file, metas, protocol):
        super().__init__(file, protocol=protocol)
        self._metas = metas     # id(network) -> meta

    def reducer_override(self, obj):
        meta = self._metas.get(id(obj))
        if meta is not None:
            return (_Reconstruct, (meta,))
        return NotImplemented

    def save_global(self, obj, name=None):
        if obj is _Reconstruct:
            self.write(pickle.GLOBAL + b'torch_utils.persistence\n_reconstruct_persistent_obj\n')
            self.memoize(obj)
            return
        super().save_global(obj, name)


def export_network_pkl(data: dict, dest, protocol: int = 4) -> dict:
    """Write `data['G'|'D'|'G_ema']` (stylefreq networks) as an upstream-loadable pickle at `dest`.

    Returns the dict of metas written per key (for inspection).
    """
    nets = {k: data.get(k) for k in NETWORK_KEYS}
    for key, net in nets.items():
        if not isinstance(net, torch.nn.Module):
            raise ExportError(f'{key!r} is {type(net).__name__}, not a network; an export needs G, D and G_ema')
    engine_module = _engine_module_of(nets)
    module_src = exported_module_src(engine_module)
    engine = {n: c for n, c in vars(engine_module).items()
              if isinstance(c, type) and c.__module__ == engine_module.__name__ and getattr(c, '_stylefreq_persistent', False)}
    metas, by_key = {}, {}
    for key, net in nets.items():
        if id(net) in metas:
            by_key[key] = metas[id(net)]
            continue
        state = _record(net.eval(), engine)
        class_name = state['class_name'].rpartition('.')[2]
        if class_name not in ('Generator', 'Discriminator') + tuple(WRAPPER_CLASSES):
            raise ExportError(f'{key}: {state["class_name"]} cannot be exported (only generators, '
                              f'discriminators and their stylefreq wrappers)')
        metas[id(net)] = by_key[key] = dict(type='class', version=UPSTREAM_PERSISTENCE_VERSION, module_src=module_src,
                                            class_name=class_name, state=state)
    tsk = data.get('training_set_kwargs')
    out = dict(training_set_kwargs=None if tsk is None else plain(dict(tsk)),
               G=nets['G'], D=nets['D'], G_ema=nets['G_ema'], augment_pipe=None)
    buf = io.BytesIO()
    _ExportPickler(buf, metas, protocol).dump(out)
    files.write_bytes(dest, buf.getvalue())
    return by_key


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m stylefreq.export',
                                     description='Export a stylefreq network pickle (plain, --cfg=ssd, --freq-shift) '
                                                 'as a pickle that a stock StyleGAN2-ADA-PyTorch checkout loads with '
                                                 'legacy.load_network_pkl (stylefreq must be installed there).')
    parser.add_argument('--network', required=True, help='stylefreq snapshot (path or URL)')
    parser.add_argument('--dest', required=True, help='output .pkl')
    parser.add_argument('--protocol', type=int, default=4, help='pickle protocol [default: 4]')
    args = parser.parse_args(argv)
    try:
        data = checkpoint.load_network_pkl(args.network, verbose=False)
        if os.path.isdir(args.dest):
            raise ExportError(f'--dest={args.dest} is a directory; name the output .pkl file')
        metas = export_network_pkl(data, args.dest, protocol=args.protocol)
    except (checkpoint.CheckpointError, ExportError, FileNotFoundError, OSError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    names = ', '.join(f'{k}={m["class_name"]}' for k, m in metas.items())
    print(f'wrote {args.dest} ({names})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
