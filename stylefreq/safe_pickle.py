"""Reading network pickles without running anything from them.

`load(file, source, file_size)` unpickles with `SafeUnpickler` and then checks the structure of
what came out. Nothing is constructed while unpickling: networks come back as inert records that
`stylefreq.records` turns into modules afterwards, once the whole file has been checked.

* `SafeUnpickler.find_class` (the only way a pickle reaches a global) admits a fixed table of
  tensor/numpy/container rebuild functions and refuses everything else with `UnsafePickleError`
  naming the global. Network objects come back inert, in three forms:
    - `OwnRecord`: stylefreq's snapshot format, `stylefreq.checkpoint._rebuild_module(record)`;
    - `UpstreamObject`: upstream's `torch_utils.persistence._reconstruct_persistent_obj(meta)`,
      whose `module_src` is kept as text and never executed;
    - `ReferencedModule`: a torch.nn.Module pickled by reference (what a patched upstream checkout
      writes for stylefreq's wrapper classes). Only nn.Module classes of the modules that files may
      name (`stylefreq.kwargs.allow_module`) and torch's containers are admitted, as placeholders:
      their class code never runs.
* Tensors must lie inside their storage (no stride-0 blow-ups), and the legacy storage payloads
  are checked against their declared sizes before torch allocates them.
* `check_structure` walks the result iteratively: depth at most MAX_DEPTH, no reference cycles,
  at most MAX_EXPANDED objects when shared references are counted each time they are reached
  (a "billion laughs" pickle is a few hundred bytes that expand to 2**60 objects), and tensor
  bytes no larger than the file.
"""

from __future__ import annotations

import collections
import importlib
import io
import pickle
import warnings

import numpy as np
import torch

from stylefreq import kwargs as sf_kwargs
from stylefreq.kwargs import EasyDict

MAX_DEPTH = 100
MAX_EXPANDED = 10_000_000
MAX_TENSOR_BYTES = 16 << 30


class CheckpointError(Exception):
    """Base of every error about the *content* of a checkpoint; its message names the file."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """The pickle references a global that stylefreq refuses to load (it could run code)."""


class UnsupportedPickleError(CheckpointError, pickle.UnpicklingError):
    """The file is not a network pickle stylefreq can read (not a pickle, too large, wrong version)."""


# ---------------------------------------------------------------------------------------------------
# Inert network objects.

UPSTREAM_PERSISTENCE_VERSION = 6
UPSTREAM_REBUILD = 'torch_utils.persistence._reconstruct_persistent_obj'
OWN_REBUILD = 'stylefreq.checkpoint._rebuild_module'


class OwnRecord:
    """A stylefreq module record (see stylefreq.records.write_record), not yet rebuilt."""

    def __init__(self, record):
        self.record = record

    def children(self):
        return [self.record]


class _StateObject:
    """A pickled nn.Module's `__dict__` (`_parameters`, `_buffers`, `_modules`, attributes)."""

    def get_state(self) -> dict:
        state = self.__dict__.get('state')
        return state if isinstance(state, dict) else {}

    def children(self):
        state = self.__dict__.get('state')
        return [] if state is None else [state]

    def tensors(self, prefix='', out=None) -> 'collections.OrderedDict[str, torch.Tensor]':
        """Flat name -> tensor dict over this object and its submodules (like named_parameters()
        followed by named_buffers(), None entries skipped)."""
        out = collections.OrderedDict() if out is None else out
        for key in ('_parameters', '_buffers'):
            self._walk(key, prefix, out)
        return out

    def _walk(self, key, prefix, out):
        entries = self.get_state().get(key) or {}
        if not isinstance(entries, dict):
            raise UnsupportedPickleError(f'{self.class_name}: {key} is a {type(entries).__name__}, not a dict')
        for name, t in entries.items():
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise UnsupportedPickleError(f"{self.class_name}: {key} entry '{prefix}{name}' is a "
                                             f"{type(t).__name__}, not a tensor")
            out[f'{prefix}{name}'] = t.detach()
        modules = self.get_state().get('_modules') or {}
        if not isinstance(modules, dict):
            raise UnsupportedPickleError(f'{self.class_name}: _modules is a {type(modules).__name__}, not a dict')
        for name, child in modules.items():
            if child is None:
                continue
            if not isinstance(child, _StateObject):
                raise UnsupportedPickleError(f"{self.class_name}: submodule '{prefix}{name}' is a "
                                             f"{type(child).__name__}, not a network")
            child._walk(key, f'{prefix}{name}.', out)

    @property
    def init_args(self) -> tuple:
        return tuple(plain(tuple(self.get_state().get('_init_args', ()) or ())))

    @property
    def init_kwargs(self) -> dict:
        return plain(dict(self.get_state().get('_init_kwargs', {}) or {}))


class UpstreamObject(_StateObject):
    """An upstream `torch_utils.persistence` object: class name, module source (text only, never
    executed), and the object's state."""

    def __init__(self, class_name, module_src, version, state):
        self.class_name = class_name
        self.module_src = module_src
        self.version = version
        self.state = state

    def __repr__(self):
        return (f'UpstreamObject(class_name={self.class_name!r}, version={self.version}, '
                f'{len(self.tensors())} tensors, init_kwargs={self.init_kwargs!r})')


class ReferencedModule(_StateObject):
    """An nn.Module pickled by reference, held as its class name and state; its class never runs."""

    class_name = None

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:        # (dict state, slot state)
            state = state[0]
        if not isinstance(state, dict):
            raise UnsafePickleError(f'{self.class_name}: pickled module state is a {type(state).__name__}')
        object.__setattr__(self, 'state', state)

    def __setattr__(self, name, value):
        raise UnsafePickleError(f'a pickle tried to set attribute {name!r} on {self.class_name}')

    def __repr__(self):
        return f'ReferencedModule({self.class_name!r})'


def plain(obj):
    """EasyDicts -> dicts and numpy scalars -> Python numbers, recursively (constructor arguments)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ---------------------------------------------------------------------------------------------------
# The unpickler.

class _FrozenClassMeta(type):
    # The BUILD opcode can set attributes on any object on the unpickler's stack, classes included.
    def __setattr__(cls, name, value):
        raise UnsafePickleError(f'a pickle tried to set attribute {name!r} on class {cls.__name__}')

    def __delattr__(cls, name):
        raise UnsafePickleError(f'a pickle tried to delete attribute {name!r} of class {cls.__name__}')


class LoadedEasyDict(EasyDict, metaclass=_FrozenClassMeta):
    """EasyDict as created by the unpickler; turned into a plain EasyDict once loading is done."""

    def __reduce__(self):
        return (EasyDict, (dict(self),))

    def __setstate__(self, state=None):
        # Defined so that BUILD cannot reach '__setstate__' among the keys (EasyDict.__getattr__).
        if not isinstance(self, LoadedEasyDict):
            raise UnsafePickleError('a pickle tried to set the state of class EasyDict')
        if state:
            raise UnsafePickleError(f'a pickle tried to set attributes {sorted(state)!r} on an EasyDict')


class _TypeToken:
    """Stands in for torch.Tensor / Parameter (mutable classes) in `_rebuild_from_type_v2` calls."""

    def __init__(self, cls):
        self.cls = cls


_CONTAINER_CLASSES = {'torch.nn.modules.container.ModuleList', 'torch.nn.modules.container.ModuleDict',
                      'torch.nn.modules.container.Sequential'}

# Legacy torch.save storage classes -> bytes per element (what a storage payload declares).
_LEGACY_STORAGES = {'FloatStorage': 4, 'DoubleStorage': 8, 'HalfStorage': 2, 'BFloat16Storage': 2,
                    'LongStorage': 8, 'IntStorage': 4, 'ShortStorage': 2, 'CharStorage': 1,
                    'ByteStorage': 1, 'BoolStorage': 1}
_LEGACY_DTYPES = {'FloatStorage': torch.float32, 'DoubleStorage': torch.float64, 'HalfStorage': torch.float16,
                  'BFloat16Storage': torch.bfloat16, 'LongStorage': torch.int64, 'IntStorage': torch.int32,
                  'ShortStorage': torch.int16, 'CharStorage': torch.int8, 'ByteStorage': torch.uint8,
                  'BoolStorage': torch.bool}


def _numpy_attr(module_path, name):
    # numpy 2 moved numpy.core to numpy._core; pickles of either era name either.
    for mod in ('numpy._core.' + module_path, 'numpy.core.' + module_path):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f'numpy has no {module_path}.{name}')


def _positional_only(fn):
    # A fresh wrapper per unpickler: BUILD may set attributes on the functions a pickle is handed,
    # which must not reach the real, shared function objects.
    def wrapper(*args):
        return fn(*args)
    return wrapper


def _check_obj_state(state, source):
    if state is None:
        return {}
    if isinstance(state, tuple) and len(state) == 2 and not state[1]:
        state = state[0] or {}
    if not isinstance(state, dict) or any(not isinstance(k, str) or k.startswith('__') for k in state):
        raise UnsafePickleError(f'{source}: refusing tensor attributes {state!r:.200}')
    return state


def _check_hooks(hooks, source):
    if hooks:
        raise UnsafePickleError(f'{source}: refusing a tensor with backward hooks')


class _LegacyHeaderReader(pickle.Unpickler):
    """Reads the small pickles of a legacy torch.save payload: plain data and storage classes only."""

    def __init__(self, file, source):
        super().__init__(file)
        self.source = source
        self.declared = []

    def find_class(self, module, name):
        if module == 'torch' and name in _LEGACY_STORAGES:
            return name
        raise UnsafePickleError(f'{self.source}: a tensor storage payload references {module}.{name}')

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'):
            raise UnsafePickleError(f'{self.source}: malformed tensor storage payload')
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if storage_type not in _LEGACY_STORAGES or not isinstance(numel, int) or numel < 0:
            raise UnsafePickleError(f'{self.source}: malformed tensor storage payload')
        self.declared.append((storage_type, key, numel))
        return None


def storage_from_payload(b, source):
    """The storage of a legacy `torch.save(storage)` payload (what pickled tensors carry), built as a
    view of `b` without a second copy, after checking that the payload holds what it declares."""
    f = io.BytesIO(b)
    try:
        for _ in range(3):                          # magic number, protocol version, system info
            info = _LegacyHeaderReader(f, source).load()
        reader = _LegacyHeaderReader(f, source)
        reader.load()
        keys = _LegacyHeaderReader(f, source).load()
    except UnsafePickleError:
        raise
    except Exception:
        raise UnsafePickleError(f'{source}: malformed tensor storage payload') from None
    if len(reader.declared) != 1 or keys != [reader.declared[0][1]] or not isinstance(info, dict) \
            or info.get('little_endian') is not True:
        raise UnsafePickleError(f'{source}: unsupported tensor storage payload')
    storage_type, _, numel = reader.declared[0]
    itemsize = _LEGACY_STORAGES[storage_type]
    start = f.tell() + 8
    if start + numel * itemsize > len(b):
        raise UnsafePickleError(f'{source}: a tensor storage declares {numel * itemsize} bytes but its payload '
                                f'holds {max(len(b) - start, 0)}')
    if int.from_bytes(b[start - 8:start], 'little') != numel:
        raise UnsafePickleError(f'{source}: malformed tensor storage payload (element count)')
    dtype = _LEGACY_DTYPES[storage_type]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')     # frombuffer on bytes warns that they are read-only: this
        # payload is private to the unpickler, so the tensor may own (and write) that memory.
        if numel == 0:
            data = torch.empty(0, dtype=dtype)
        else:
            data = torch.frombuffer(b, dtype=dtype, count=numel, offset=start)
        return torch.storage.TypedStorage(wrap_storage=data.untyped_storage(), dtype=dtype, _internal=True)


class SafeUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that admits only the globals a network pickle needs (see module docstring)."""

    def __init__(self, file, *, source=None, **kwargs):
        super().__init__(file, **kwargs)
        self.source = source or getattr(file, 'name', None) or '<pickle>'
        self._globals = self._make_globals()
        self._placeholders = {}

    def _make_globals(self):
        source = self.source
        from torch import _utils as tu

        def load_from_bytes(b):
            if not isinstance(b, (bytes, bytearray)):
                raise UnsafePickleError(f'{source}: malformed tensor storage')
            return storage_from_payload(b, source)

        def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
            if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
                raise UnsafePickleError(f'{source}: malformed tensor (storage is a {type(storage).__name__})')
            _check_hooks(backward_hooks, source)
            if metadata is not None and not isinstance(metadata, dict):
                raise UnsafePickleError(f'{source}: malformed tensor metadata')
            _check_view(storage, storage_offset, size, stride, source)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                return tu._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                                             collections.OrderedDict(), metadata)

        def rebuild_parameter(data, requires_grad, backward_hooks):
            _check_hooks(backward_hooks, source)
            if not isinstance(data, torch.Tensor):
                raise UnsafePickleError(f'{source}: malformed parameter')
            return torch.nn.Parameter(data, requires_grad)

        def rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
            param = rebuild_parameter(data, requires_grad, backward_hooks)
            for k, v in _check_obj_state(state, source).items():
                setattr(param, k, v)
            return param

        def rebuild_from_type_v2(func, new_type, args, state):
            if func not in (rebuild_tensor_v2, rebuild_parameter, rebuild_parameter_with_state):
                raise UnsafePickleError(f'{source}: refusing to rebuild a tensor with {func!r}')
            if not isinstance(new_type, _TypeToken):
                raise UnsafePickleError(f'{source}: refusing to rebuild a tensor as {new_type!r}')
            ret = func(*args)
            if type(ret) is not new_type.cls:
                ret = ret.as_subclass(new_type.cls)
            for k, v in _check_obj_state(state, source).items():
                setattr(ret, k, v)
            return ret

        def reconstruct_persistent_obj(meta):
            if not isinstance(meta, dict):
                raise UnsupportedPickleError(f'{source}: malformed upstream persistent object')
            if meta.get('version') != UPSTREAM_PERSISTENCE_VERSION:
                raise UnsupportedPickleError(
                    f"{source}: upstream persistent object version {meta.get('version')!r} is not supported "
                    f"(stylefreq reads version {UPSTREAM_PERSISTENCE_VERSION}, used by StyleGAN2-ADA-PyTorch)")
            if meta.get('type') != 'class' or not isinstance(meta.get('class_name'), str) \
                    or not isinstance(meta.get('state'), dict):
                raise UnsupportedPickleError(f'{source}: malformed upstream persistent object')
            return UpstreamObject(meta['class_name'], meta.get('module_src'), meta['version'], meta['state'])

        def own_record(record):
            return OwnRecord(record)

        def codecs_encode(obj, encoding='utf-8', errors='strict'):
            # Protocol <= 2 pickles store bytes as codecs.encode(str, 'latin1').
            if encoding not in ('latin1', 'latin-1') or not isinstance(obj, str):
                raise UnsafePickleError(f'{source}: refusing _codecs.encode with encoding {encoding!r}')
            return obj.encode('latin1', errors)

        def reconstructor(cls, base, state):
            # Protocol < 2 form of pickling an object by reference: only our placeholders.
            if not (isinstance(cls, type) and issubclass(cls, ReferencedModule)) or base is not _OBJECT \
                    or state is not None:
                raise UnsafePickleError(f'{source}: refusing copyreg._reconstructor({cls!r}, {base!r})')
            return cls.__new__(cls)

        g = {
            'collections.OrderedDict': collections.OrderedDict,
            'builtins.set': set,
            'builtins.frozenset': frozenset,
            'builtins.object': _OBJECT,
            'copyreg._reconstructor': reconstructor,
            '_codecs.encode': codecs_encode,
            'torch._utils._rebuild_tensor_v2': rebuild_tensor_v2,
            'torch._utils._rebuild_parameter': rebuild_parameter,
            'torch._utils._rebuild_parameter_with_state': rebuild_parameter_with_state,
            'torch._tensor._rebuild_from_type_v2': rebuild_from_type_v2,
            'torch.Tensor': _TypeToken(torch.Tensor),
            'torch.nn.parameter.Parameter': _TypeToken(torch.nn.Parameter),
            'torch.storage._load_from_bytes': load_from_bytes,
            'torch.Size': torch.Size,
            'torch.device': torch.device,
            'numpy.dtype': np.dtype,
            'numpy.ndarray': np.ndarray,
            'dnnlib.util.EasyDict': LoadedEasyDict,
            'stylefreq.kwargs.EasyDict': LoadedEasyDict,
            UPSTREAM_REBUILD: reconstruct_persistent_obj,
            OWN_REBUILD: own_record,
        }
        for core in ('numpy.core', 'numpy._core'):
            g[f'{core}.multiarray.scalar'] = _numpy_attr('multiarray', 'scalar')
            g[f'{core}.multiarray._reconstruct'] = _numpy_attr('multiarray', '_reconstruct')
            g[f'{core}.numeric._frombuffer'] = _positional_only(_numpy_attr('numeric', '_frombuffer'))
        return g

    def _placeholder(self, full):
        cls = self._placeholders.get(full)
        if cls is None:
            cls = _FrozenClassMeta(full.rpartition('.')[2], (ReferencedModule,), {'class_name': full})
            self._placeholders[full] = cls
        return cls

    def _module_class(self, module, name):
        """A placeholder if module.name is an nn.Module class that files may name, else None."""
        full = f'{module}.{name}'
        if full in _CONTAINER_CLASSES:
            return self._placeholder(full)
        if module not in sf_kwargs.allowed_modules():
            return None
        cls = importlib.import_module(module).__dict__.get(name)
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            return self._placeholder(full)
        return None

    def find_class(self, module, name):
        module = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}.get(module, module)   # protocol <= 2 names
        full = f'{module}.{name}'
        obj = self._globals.get(full)
        if obj is not None:
            return obj
        if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith('dnnlib.tflib'):
            raise UnsupportedPickleError(
                f'{self.source} is a TensorFlow-era StyleGAN pickle (it references {full}); TensorFlow pickles '
                f'are not supported: convert it to a PyTorch pickle first with upstream stylegan2-ada-pytorch\'s '
                f'legacy.py (python legacy.py --source=OLD.pkl --dest=NEW.pkl)')
        placeholder = self._module_class(module, name)
        if placeholder is not None:
            return placeholder
        raise UnsafePickleError(f"{self.source}: refusing to load global '{full}': it is not on stylefreq's "
                                f"allow-list of pickle globals (loading it could run code from the file)")


class _Object:
    """Stands for `builtins.object` (only meaningful as copyreg._reconstructor's base argument)."""


_OBJECT = _Object()


def _check_view(storage, offset, size, stride, source):
    """A tensor may only address elements inside its storage, each at most once in total count."""
    try:
        size, stride, offset = [int(s) for s in size], [int(s) for s in stride], int(offset)
    except (TypeError, ValueError):
        raise UnsafePickleError(f'{source}: malformed tensor geometry') from None
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise UnsafePickleError(f'{source}: malformed tensor geometry (size {size}, stride {stride})')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')            # TypedStorage deprecation
        if isinstance(storage, torch.storage.TypedStorage):
            capacity = storage.size()
        else:
            capacity = storage.nbytes()   # untyped storages count bytes; the typed view is never larger
    numel = 1
    for s in size:
        numel *= s
    if numel == 0:
        return
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= capacity or numel > capacity:
        raise UnsafePickleError(f'{source}: a tensor of shape {size} claims more elements than its storage holds '
                                f'({capacity})')


# ---------------------------------------------------------------------------------------------------
# Structure checks.

_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), torch.Tensor, np.generic, np.dtype,
           torch.Size, torch.device, torch.dtype)


def _children(node):
    if isinstance(node, dict):
        return list(node.keys()) + list(node.values())
    if isinstance(node, (list, tuple, set, frozenset)):
        return list(node)
    if isinstance(node, (OwnRecord, _StateObject)):
        return node.children()
    if isinstance(node, np.ndarray):
        return list(node.ravel()) if node.dtype == object else []
    return []


def check_structure(obj, source: str, file_size: int | None = None):
    """Raise UnsupportedPickleError unless `obj` is a tree (or small DAG) of bounded size and depth
    whose tensors fit in `file_size` bytes. Iterative, linear in the number of distinct objects."""
    expanded = {}           # id -> number of objects reached from it, shared ones counted each time
    on_path = set()
    keep = []               # keeps ids stable while walking
    storages = {}
    stack = [(obj, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        if isinstance(node, _LEAVES) and not isinstance(node, (tuple,)):
            if isinstance(node, torch.Tensor):
                st = node.untyped_storage()
                storages[(st.data_ptr(), st.nbytes())] = st.nbytes()
            continue
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(expanded.get(id(c), 1) for c in _children(node))
            if total > MAX_EXPANDED:
                raise UnsupportedPickleError(f'{source}: refusing a pickle that expands to more than '
                                             f'{MAX_EXPANDED:,} objects through shared references')
            expanded[key] = total
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise UnsupportedPickleError(f'{source}: refusing a pickle that contains a reference cycle')
        if depth > MAX_DEPTH:
            raise UnsupportedPickleError(f'{source}: refusing a pickle nested deeper than {MAX_DEPTH} levels')
        if not isinstance(node, (dict, list, tuple, set, frozenset, OwnRecord, _StateObject, np.ndarray)):
            raise UnsupportedPickleError(f'{source}: unexpected object of type {type(node).__name__} in the pickle')
        on_path.add(key)
        keep.append(node)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in _children(node))
    total_bytes = sum(storages.values())
    limit = MAX_TENSOR_BYTES if file_size is None else min(MAX_TENSOR_BYTES, file_size)
    if total_bytes > limit:
        raise UnsupportedPickleError(f'{source}: its tensors claim {total_bytes:,} bytes, more than '
                                     f'{"the file holds" if file_size is not None and file_size < MAX_TENSOR_BYTES else "the limit"} '
                                     f'({limit:,} bytes)')


def restore_easydicts(obj):
    """Replace the unpickler's LoadedEasyDicts by EasyDicts (in place where possible); iterative,
    each shared container converted once."""
    converted = {}

    def convert(node):
        if isinstance(node, LoadedEasyDict):
            return converted.setdefault(id(node), EasyDict(node))
        return node

    root = convert(obj)
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            for k, v in list(node.items()):
                node[k] = convert(v)
                stack.append(node[k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                node[i] = convert(v)
                stack.append(node[i])
        elif isinstance(node, tuple):
            stack.extend(node)       # tuples are immutable: EasyDicts inside them stay loaded ones
        elif isinstance(node, (OwnRecord, _StateObject)):
            stack.extend(node.children())
    return root


def load(file, source: str, file_size: int | None = None):
    """Unpickle `file` safely and check its structure; networks stay inert records."""
    head = b''
    if getattr(file, 'seekable', lambda: False)():
        pos = file.tell()
        head = file.read(4)
        file.seek(pos)
    if head.startswith(b'PK\x03\x04'):
        raise UnsupportedPickleError(f'{source} is not a network pickle: it is a zip archive (a torch.save() file?)')
    try:
        obj = SafeUnpickler(file, source=source).load()
    except CheckpointError:
        raise
    except MemoryError:
        raise UnsupportedPickleError(f'{source}: refusing a pickle that needs more memory than is available') from None
    except RecursionError:
        raise UnsupportedPickleError(f'{source}: refusing a pickle nested too deeply') from None
    except Exception as e:
        raise UnsupportedPickleError(f'{source} is not a network pickle: {type(e).__name__}: {e}'[:500]) from None
    check_structure(obj, source, file_size)
    return restore_easydicts(obj)
