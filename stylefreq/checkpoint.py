"""Network pickles: safe loading of upstream and own snapshots, atomic saving, and a download cache.

Two on-disk formats are read:

* Upstream StyleGAN2-ADA-PyTorch snapshots (`network-snapshot-*.pkl` and the published pretrained
  pickles). Each network in them is a record holding the *source code* of its defining module, which
  upstream executes on load. Here that source is never executed: the record is kept as an
  `UpstreamObject` (class name, constructor arguments, tensors), and the network is rebuilt from the
  matching stylefreq class (`training.networks.Generator`, ...) with the tensors copied in by name.
* stylefreq's own snapshots, written by `save_network_pkl`. A network is stored as a plain record
  (dotted class name, constructor arguments, tensors) and rebuilt by `_rebuild_module`, which only
  constructs allow-listed, `persistent_class`-decorated classes.

Both go through `SafeUnpickler`, whose `find_class` admits a short allow-list of globals (tensor and
numpy rebuild functions, OrderedDict, EasyDict, the two record hooks above) and refuses everything else
with `UnsafePickleError` naming the global, so a pickle cannot run code on load.

The download cache (`open_url`, `make_cache_dir_path`) keeps upstream's layout
(`<cache>/downloads/<md5(url)>_<name>`, root `$DNNLIB_CACHE_DIR` or `~/.cache/dnnlib`), so files that
an upstream checkout already downloaded are reused.
"""

import collections
import glob
import hashlib
import importlib
import importlib.util
import io
import os
import pickle
import re
import sys
import tempfile
import time
import types
import urllib.parse
import urllib.request
import warnings

import numpy as np
import torch

from stylefreq import persistence
from stylefreq.kwargs import EasyDict, get_obj_by_name

__all__ = [
    'set_cache_dir', 'make_cache_dir_path', 'open_url', 'DownloadError',
    'UnsafePickleError', 'UnsupportedPickleError', 'RebuildError', 'SafeUnpickler', 'UpstreamObject',
    'allow_module_prefix', 'register_upstream_class', 'save_network_pkl', 'load_network_pkl',
]


# ------------------------------------------------------------------------------------------------
# Download cache.

_cache_dir = None


def set_cache_dir(path):
    """Root of the cache for this process (overrides $DNNLIB_CACHE_DIR); None restores the default."""
    global _cache_dir
    _cache_dir = None if path is None else os.fspath(path)


def make_cache_dir_path(*parts) -> str:
    """Path under the cache root: set_cache_dir() > $DNNLIB_CACHE_DIR > ~/.cache/dnnlib > <tmp>/.cache/dnnlib."""
    if _cache_dir is not None:
        return os.path.join(_cache_dir, *parts)
    if os.environ.get('DNNLIB_CACHE_DIR'):
        return os.path.join(os.environ['DNNLIB_CACHE_DIR'], *parts)
    for home_var in ('HOME', 'USERPROFILE'):
        if os.environ.get(home_var):
            return os.path.join(os.environ[home_var], '.cache', 'dnnlib', *parts)
    return os.path.join(tempfile.gettempdir(), '.cache', 'dnnlib', *parts)


class DownloadError(OSError):
    """A URL could not be downloaded (HTTP error status, or the connection failed on every attempt)."""


class _TransientDownloadError(Exception):
    pass


_RETRY_DELAY_S = 1.0          # first back-off between attempts; doubled each time, at most 10 s
_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = (15, 60)         # (connect, read between chunks)


def _is_url(s: str) -> bool:
    return isinstance(s, str) and re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*://', s) is not None


def _file_url_to_path(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    path = urllib.request.url2pathname(parsed.path)
    if parsed.netloc and parsed.netloc != 'localhost':
        path = f'//{parsed.netloc}{path}'           # UNC-style file://host/share/...
    if re.match(r'^[/\\][a-zA-Z]:', path):             # file:///C:/x -> C:/x
        path = path[1:]
    return path


def _open_local(path: str, return_filename: bool, what: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f'{what} does not exist')
    if os.path.isdir(path):
        raise IsADirectoryError(f'{what} is a directory, not a file')
    return path if return_filename else open(path, 'rb')


def _sanitised_url_name(url: str) -> str:
    name = urllib.parse.unquote(os.path.basename(urllib.parse.urlparse(url).path)) or 'download'
    return re.sub(r'[^0-9A-Za-z._-]', '_', name)[:128]


def _download(url: str, dst, verbose: bool):
    """One attempt: stream `url` into the open binary file `dst`. Raises _TransientDownloadError for
    failures worth retrying and DownloadError for the rest."""
    import requests  # imported here: only downloads need it

    label = _sanitised_url_name(url)
    printed = False
    try:
        with requests.get(url, stream=True, timeout=_TIMEOUT_S) as res:
            if res.status_code != 200:
                msg = f'downloading {url} failed: HTTP {res.status_code} {res.reason or ""}'.rstrip()
                if res.status_code >= 500 or res.status_code in (408, 429):
                    raise _TransientDownloadError(msg)
                raise DownloadError(msg)
            total = int(res.headers.get('Content-Length') or 0) or None
            done = 0
            last_print = 0.0
            for chunk in res.iter_content(chunk_size=_CHUNK_BYTES):
                dst.write(chunk)
                done += len(chunk)
                now = time.monotonic()
                if verbose and (now - last_print > 0.2 or done == total):
                    last_print = now
                    total_str = f' / {total / 2**20:.1f}' if total else ''
                    sys.stderr.write(f'\rDownloading {label}: {done / 2**20:.1f}{total_str} MB')
                    sys.stderr.flush()
                    printed = True
            # Content-Length counts encoded bytes; iter_content yields decoded ones.
            encoded = res.headers.get('Content-Encoding', 'identity').lower() not in ('', 'identity')
            if total is not None and done != total and not encoded:
                raise _TransientDownloadError(f'downloading {url} stopped after {done} of {total} bytes')
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise _TransientDownloadError(f'downloading {url} failed: {type(e).__name__}: {e}') from e
    finally:
        if printed:
            sys.stderr.write('\n')
            sys.stderr.flush()


def _download_with_retries(url, dst, num_attempts, verbose):
    for attempt in range(1, num_attempts + 1):
        dst.seek(0)
        dst.truncate()
        try:
            _download(url, dst, verbose)
            return
        except _TransientDownloadError as e:
            if attempt == num_attempts:
                plural = 's' if num_attempts > 1 else ''
                raise DownloadError(f'{e} (gave up after {num_attempts} attempt{plural})') from None
            if verbose:
                print(f'{e}; retrying', file=sys.stderr)
        time.sleep(min(_RETRY_DELAY_S * 2 ** (attempt - 1), 10.0))


def open_url(url, cache_dir=None, num_attempts=3, verbose=True, return_filename=False, cache=True):
    """Open a local path, a `file://` URL or an `http(s)://` URL (downloaded once into the cache).

    Returns an open binary file object, or the local filename when `return_filename=True`.
    A download goes to a temporary file next to the cache entry and is renamed into place only
    when complete, so an interrupted download never leaves a partial file under the cached name.
    Cached files are used without touching the network. `cache=False` downloads into memory.
    """
    url = os.fspath(url)
    if return_filename and not cache:
        raise ValueError('open_url: return_filename=True needs cache=True (an uncached download has no file)')
    if not _is_url(url):
        return _open_local(url, return_filename, url)
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme == 'file':
        path = _file_url_to_path(url)
        return _open_local(path, return_filename, f'{url} (local file {path})')
    if scheme not in ('http', 'https'):
        raise ValueError(f'{url}: unsupported URL scheme {scheme!r} (use a path, file://, http:// or https://)')
    if num_attempts < 1:
        raise ValueError('open_url: num_attempts must be at least 1')

    if not cache:
        buf = io.BytesIO()
        _download_with_retries(url, buf, num_attempts, verbose)
        buf.seek(0)
        return buf

    cache_dir = make_cache_dir_path('downloads') if cache_dir is None else os.fspath(cache_dir)
    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    # Any '<md5>_*' entry counts, so files that upstream's dnnlib cached are reused as well.
    hits = sorted(glob.glob(os.path.join(glob.escape(cache_dir), url_md5 + '_*')))
    if hits:
        return hits[0] if return_filename else open(hits[0], 'rb')

    os.makedirs(cache_dir, exist_ok=True)
    final = os.path.join(cache_dir, f'{url_md5}_{_sanitised_url_name(url)}')
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f'.tmp-{url_md5}-', suffix='.part')
    try:
        with os.fdopen(fd, 'wb') as dst:
            _download_with_retries(url, dst, num_attempts, verbose)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(tmp, 0o666 & ~_umask())          # mkstemp creates 0600
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return final if return_filename else open(final, 'rb')


# ------------------------------------------------------------------------------------------------
# Errors.

class CheckpointError(Exception):
    """Base of every error about the *content* of a checkpoint; its message names the file."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """The pickle references a global that stylefreq refuses to load (it could run code)."""


class UnsupportedPickleError(CheckpointError, pickle.UnpicklingError):
    """The file is not a network pickle stylefreq can read (not a pickle, TensorFlow-era, wrong version)."""


class RebuildError(CheckpointError, ValueError):
    """A network could not be rebuilt from a checkpoint (constructor failed, tensor names/shapes differ)."""


# ------------------------------------------------------------------------------------------------
# Which classes may be constructed on load.

# Dotted prefixes of classes that `_rebuild_module` (and the upstream mapping) may import and
# construct. The class must also be a torch.nn.Module decorated with `persistent_class`.
_ALLOWED_MODULE_PREFIXES = ['training.networks.', 'training.augment.', 'stylefreq.']

# Upstream class name (as stored in the pickle) -> stylefreq class.
_UPSTREAM_CLASSES = {name: f'training.networks.{name}' for name in (
    'FullyConnectedLayer', 'Conv2dLayer', 'MappingNetwork', 'SynthesisLayer', 'ToRGBLayer',
    'SynthesisBlock', 'SynthesisNetwork', 'Generator', 'DiscriminatorBlock', 'MinibatchStdLayer',
    'DiscriminatorEpilogue', 'Discriminator')}
_UPSTREAM_CLASSES['AugmentPipe'] = 'training.augment.AugmentPipe'
# Networks written by `python -m stylefreq.export` (their state holds constructor arguments + tensors).
_UPSTREAM_CLASSES['FrequencyShiftedGenerator'] = 'stylefreq.freqshift.FrequencyShiftedGenerator'
_UPSTREAM_CLASSES['SSDDiscriminator'] = 'stylefreq.ssd.SSDDiscriminator'


def allow_module_prefix(prefix: str):
    """Let checkpoints construct persistent classes under `prefix` (a package or module, e.g. 'myplugin')."""
    if not isinstance(prefix, str) or not prefix.strip('.'):
        raise ValueError(f'allow_module_prefix: expected a dotted module name, got {prefix!r}')
    prefix = prefix if prefix.endswith('.') else prefix + '.'
    if prefix not in _ALLOWED_MODULE_PREFIXES:
        _ALLOWED_MODULE_PREFIXES.append(prefix)


def register_upstream_class(upstream_name: str, class_name: str):
    """Rebuild upstream persistent objects of class `upstream_name` (e.g. a fork's network) as `class_name`."""
    _UPSTREAM_CLASSES[upstream_name] = class_name


def _is_allowed_class_name(class_name) -> bool:
    return isinstance(class_name, str) and any(class_name.startswith(p) for p in _ALLOWED_MODULE_PREFIXES)


def _check_nested_class_names(obj, source, owner):
    """Constructor arguments may name further classes (wrapper networks build their inner network
    from a class_name); those names must be allowed as well, or the file could make us import anything."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == 'class_name' and not _is_allowed_class_name(v):
                raise UnsafePickleError(
                    f"{source}: {owner} is constructed with class_name={v!r}, which is outside the allowed "
                    f"module prefixes {_ALLOWED_MODULE_PREFIXES} (see stylefreq.checkpoint.allow_module_prefix)")
            _check_nested_class_names(v, source, owner)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_nested_class_names(v, source, owner)


def _resolve_persistent_class(class_name, source):
    if not _is_allowed_class_name(class_name):
        raise UnsafePickleError(
            f'{source}: refusing to construct {class_name!r}: it is outside the allowed module prefixes '
            f'{_ALLOWED_MODULE_PREFIXES} (see stylefreq.checkpoint.allow_module_prefix)')
    try:
        cls = get_obj_by_name(class_name)
    except ImportError as e:
        raise RebuildError(f'{source}: cannot import {class_name}: {e}') from e
    persistent = isinstance(cls, type) and getattr(cls, '_stylefreq_persistent', False)
    if not (persistent and issubclass(cls, torch.nn.Module)):
        raise UnsafePickleError(f'{source}: refusing to construct {class_name!r}: it is not a torch.nn.Module '
                                f'decorated with stylefreq.persistence.persistent_class')
    return cls


def _shape(t) -> str:
    return str(list(t.shape))


def _copy_tensors_strict(module, tensors, source, class_name):
    """Copy `tensors` (name -> tensor) into `module` by name; names and shapes must match exactly."""
    own = collections.OrderedDict(module.named_parameters())
    own.update(module.named_buffers())
    for name, dst in own.items():
        if name not in tensors:
            raise RebuildError(f"{source}: {class_name} has tensor '{name}' {_shape(dst)}, but the file has "
                               f"no tensor of that name")
    for name, src in tensors.items():
        if name not in own:
            raise RebuildError(f"{source}: the file holds tensor '{name}' {_shape(src)}, which {class_name} "
                               f"does not have")
        if not isinstance(src, torch.Tensor):
            raise RebuildError(f"{source}: '{name}' of {class_name} is a {type(src).__name__}, not a tensor")
        if tuple(src.shape) != tuple(own[name].shape):
            raise RebuildError(f"{source}: tensor '{name}' of {class_name} has shape {_shape(src)} in the file "
                               f"but {_shape(own[name])} in the rebuilt network")
    with torch.no_grad():
        for name, dst in own.items():
            dst.copy_(tensors[name].detach())


def _construct(class_name, init_args, init_kwargs, tensors, source, what=None):
    """Import an allowed persistent class, construct it, copy the tensors in; eval mode, no grads, CPU."""
    what = what or class_name
    _check_nested_class_names(init_args, source, what)
    _check_nested_class_names(init_kwargs, source, what)
    cls = _resolve_persistent_class(class_name, source)
    try:
        module = cls(*init_args, **init_kwargs)
    except Exception as e:
        raise RebuildError(f'{source}: cannot rebuild {what} as {class_name}({_kwargs_repr(init_kwargs)}): '
                           f'{type(e).__name__}: {e}') from e
    _copy_tensors_strict(module, tensors, source, what)
    return module.eval().requires_grad_(False)


def _kwargs_repr(kwargs, limit=200):
    s = ', '.join(f'{k}={v!r}' for k, v in kwargs.items())
    return s if len(s) <= limit else s[:limit] + '...'


# ------------------------------------------------------------------------------------------------
# stylefreq's own module records.

_RECORD_FORMAT = 'stylefreq.module'
_RECORD_VERSION = 1


def _rebuild_module(record, _source='<pickle>'):
    """Rebuild a network from a record written by `save_network_pkl` (the only callable our pickles name)."""
    if not (isinstance(record, dict) and record.get('format') == _RECORD_FORMAT):
        raise UnsupportedPickleError(f'{_source}: malformed stylefreq module record')
    if record.get('version') != _RECORD_VERSION:
        raise UnsupportedPickleError(f"{_source}: stylefreq module record version {record.get('version')!r} is "
                                     f"not supported (this stylefreq reads version {_RECORD_VERSION})")
    class_name = record.get('class_name')
    if not isinstance(class_name, str):
        raise UnsupportedPickleError(f'{_source}: malformed stylefreq module record (class_name {class_name!r})')
    init_args = _restore_easydicts(tuple(record.get('init_args', ())))
    init_kwargs = _restore_easydicts(dict(record.get('init_kwargs', {})))
    tensors = record.get('tensors', {})
    if not isinstance(tensors, dict):
        raise UnsupportedPickleError(f'{_source}: malformed stylefreq module record (tensors)')
    return _construct(class_name, init_args, init_kwargs, tensors, _source)


def _module_record(m: torch.nn.Module) -> dict:
    tensors = collections.OrderedDict()
    for name, t in list(m.named_parameters()) + list(m.named_buffers()):
        tensors[name] = t.detach().to('cpu', copy=True)
    return dict(format=_RECORD_FORMAT, version=_RECORD_VERSION, class_name=persistence.class_name_of(m),
                init_args=persistence.init_args_of(m), init_kwargs=persistence.init_kwargs_of(m),
                tensors=tensors, training=m.training)


# ------------------------------------------------------------------------------------------------
# Upstream persistent objects.

_UPSTREAM_PERSISTENCE_VERSION = 6


def _plain(obj):
    """EasyDicts -> dicts and numpy scalars -> Python numbers, recursively (for constructor arguments)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class UpstreamObject:
    """What an upstream `torch_utils.persistence` record holds, without executing its `module_src`.

    `state` is the object's `__dict__` as pickled (for a network: `_parameters`, `_buffers`,
    `_modules` with children as UpstreamObjects, `_init_args`, `_init_kwargs`, plain attributes).
    """

    def __init__(self, class_name, module_src, version, state):
        self.class_name = class_name
        self.module_src = module_src        # text only; never executed
        self.version = version
        self.state = state

    @property
    def init_args(self) -> tuple:
        return tuple(_plain(tuple(self.state.get('_init_args', ()) or ())))

    @property
    def init_kwargs(self) -> dict:
        return _plain(dict(self.state.get('_init_kwargs', {}) or {}))

    @property
    def tensors(self) -> 'collections.OrderedDict[str, torch.Tensor]':
        """Flat name -> tensor dict, named and ordered like `named_parameters()` + `named_buffers()`."""
        out = collections.OrderedDict()
        self._collect(out, '', '_parameters')
        self._collect(out, '', '_buffers')
        return out

    def _collect(self, out, prefix, key):
        for name, t in (self.state.get(key) or {}).items():
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise UnsupportedPickleError(f"upstream {self.class_name}: {key} entry '{prefix}{name}' is a "
                                             f"{type(t).__name__}, not a tensor")
            out[prefix + name] = t.detach()
        for name, child in (self.state.get('_modules') or {}).items():
            if child is None:
                continue
            if not isinstance(child, UpstreamObject):
                raise UnsupportedPickleError(f"upstream {self.class_name}: submodule '{prefix}{name}' is a "
                                             f"{type(child).__name__}, not an upstream persistent object")
            child._collect(out, f'{prefix}{name}.', key)

    def __repr__(self):
        return (f'UpstreamObject(class_name={self.class_name!r}, version={self.version}, '
                f'{len(self.tensors)} tensors, init_kwargs={self.init_kwargs!r})')


def _rebuild_upstream(obj: UpstreamObject, source, key):
    """An upstream record -> the stylefreq module, or the record itself if no stylefreq class exists."""
    class_name = _UPSTREAM_CLASSES.get(obj.class_name)
    reason = None
    if class_name is None:
        reason = f'no stylefreq class is registered for upstream {obj.class_name!r}'
    else:
        module_name, _, attr = class_name.rpartition('.')
        try:
            spec = importlib.util.find_spec(module_name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            reason = f'module {module_name} does not exist'
        elif not hasattr(importlib.import_module(module_name), attr):
            reason = f'{module_name} has no {attr}'
    if reason is not None:
        warnings.warn(f'{source}: {key!r} is an upstream {obj.class_name} that stylefreq cannot rebuild ({reason}); '
                      f'it is returned as an UpstreamObject (class_name, init_kwargs, tensors)', stacklevel=3)
        return obj
    return _construct(class_name, obj.init_args, obj.init_kwargs, obj.tensors, source,
                      what=f'{key!r} (upstream {obj.class_name})')


# ------------------------------------------------------------------------------------------------
# The unpickler.

class _FrozenClassMeta(type):
    # The unpickler's BUILD opcode can set attributes on any object on its stack, classes included;
    # classes we hand out must therefore not be mutable from a pickle.
    def __setattr__(cls, name, value):
        raise UnsafePickleError(f'a pickle tried to set attribute {name!r} on class {cls.__name__}')

    def __delattr__(cls, name):
        raise UnsafePickleError(f'a pickle tried to delete attribute {name!r} of class {cls.__name__}')


class _LoadedEasyDict(EasyDict, metaclass=_FrozenClassMeta):
    """EasyDict as created by the unpickler; replaced by a plain EasyDict once loading is done."""

    def __reduce__(self):
        return (EasyDict, (dict(self),))

    def __setstate__(self, state=None):
        # Defined so that BUILD cannot look up '__setstate__' among the keys (EasyDict.__getattr__).
        # Real EasyDicts keep everything in items, so pickles carry no state for them.
        if not isinstance(self, _LoadedEasyDict):      # BUILD applied to the class itself
            raise UnsafePickleError('a pickle tried to set the state of class EasyDict')
        if state:
            raise UnsafePickleError(f'a pickle tried to set attributes {sorted(state)!r} on an EasyDict')


class _TypeToken:
    """Stands in for torch.Tensor / Parameter (mutable classes) in `_rebuild_from_type_v2` calls."""

    def __init__(self, cls):
        self.cls = cls


def _check_obj_state(state, source):
    if state is None:
        return {}
    if isinstance(state, tuple) and len(state) == 2 and not state[1]:
        state = state[0] or {}
    if not isinstance(state, dict) or any(not isinstance(k, str) or k.startswith('__') for k in state):
        raise UnsafePickleError(f'{source}: refusing tensor attributes {state!r}')
    return state


def _check_hooks(hooks, source):
    if hooks:
        raise UnsafePickleError(f'{source}: refusing a tensor with backward hooks')


_UPSTREAM_REBUILD_NAME = 'torch_utils.persistence._reconstruct_persistent_obj'
_OWN_REBUILD_NAME = f'{__name__}._rebuild_module'


def _numpy_attr(module_path, name):
    # numpy 2 moved numpy.core to numpy._core; pickles of either era name either.
    for mod in ('numpy._core.' + module_path, 'numpy.core.' + module_path):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f'numpy has no {module_path}.{name}')


def _positional_only(fn):
    # A fresh wrapper per unpickler: a pickle may set attributes on the functions it is handed
    # (BUILD opcode), which must not reach the real, shared function objects.
    def wrapper(*args):
        return fn(*args)
    return wrapper


class SafeUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that only admits the globals a network pickle needs; nothing runs from the file.

    `find_class` (the only way a pickle reaches a global, for GLOBAL, STACK_GLOBAL, INST and EXT
    opcodes alike) returns vetted objects or raises `UnsafePickleError` naming 'module.name' and the file.
    Upstream persistent records come back as `UpstreamObject`s, stylefreq records as rebuilt networks.
    """

    def __init__(self, file, *, source=None, **kwargs):
        super().__init__(file, **kwargs)
        self.source = source or getattr(file, 'name', None) or '<pickle>'
        self._globals = self._make_globals()

    def _make_globals(self):
        source = self.source
        from torch import _utils as tu

        def load_from_bytes(b):
            if not isinstance(b, (bytes, bytearray)):
                raise UnsafePickleError(f'{source}: malformed tensor storage')
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')      # TypedStorage deprecation
                storage = torch.load(io.BytesIO(b), weights_only=True, map_location='cpu')
            if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
                raise UnsafePickleError(f'{source}: malformed tensor storage ({type(storage).__name__})')
            return storage

        def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
            if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
                raise UnsafePickleError(f'{source}: malformed tensor (storage is a {type(storage).__name__})')
            _check_hooks(backward_hooks, source)
            if metadata is not None and not isinstance(metadata, dict):
                raise UnsafePickleError(f'{source}: malformed tensor metadata')
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                return tu._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                                             collections.OrderedDict(), metadata)

        def rebuild_parameter(data, requires_grad, backward_hooks):
            _check_hooks(backward_hooks, source)
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
            if meta.get('version') != _UPSTREAM_PERSISTENCE_VERSION:
                raise UnsupportedPickleError(
                    f"{source}: upstream persistent object version {meta.get('version')!r} is not supported "
                    f"(stylefreq reads version {_UPSTREAM_PERSISTENCE_VERSION}, used by StyleGAN2-ADA-PyTorch)")
            if meta.get('type') != 'class' or not isinstance(meta.get('class_name'), str) \
                    or not isinstance(meta.get('state'), dict):
                raise UnsupportedPickleError(f'{source}: malformed upstream persistent object')
            return UpstreamObject(meta['class_name'], meta.get('module_src'), meta['version'], meta['state'])

        def rebuild_module(record):
            return _rebuild_module(record, _source=source)

        def codecs_encode(obj, encoding='utf-8', errors='strict'):
            # Protocol <= 2 pickles store bytes as codecs.encode(str, 'latin1').
            if encoding not in ('latin1', 'latin-1') or not isinstance(obj, str):
                raise UnsafePickleError(f'{source}: refusing _codecs.encode with encoding {encoding!r}')
            return obj.encode('latin1', errors)

        g = {
            'collections.OrderedDict': collections.OrderedDict,
            'builtins.set': set,
            'builtins.frozenset': frozenset,
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
            'dnnlib.util.EasyDict': _LoadedEasyDict,
            'stylefreq.kwargs.EasyDict': _LoadedEasyDict,
            _UPSTREAM_REBUILD_NAME: reconstruct_persistent_obj,
            _OWN_REBUILD_NAME: rebuild_module,
        }
        for core in ('numpy.core', 'numpy._core'):
            g[f'{core}.multiarray.scalar'] = _numpy_attr('multiarray', 'scalar')
            g[f'{core}.multiarray._reconstruct'] = _numpy_attr('multiarray', '_reconstruct')
            g[f'{core}.numeric._frombuffer'] = _positional_only(_numpy_attr('numeric', '_frombuffer'))
        return g

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
        raise UnsafePickleError(f"{self.source}: refusing to load global '{full}': it is not on stylefreq's "
                                f"allow-list of pickle globals (loading it could run code from the file)")


# ------------------------------------------------------------------------------------------------
# Saving.

def _global_name(obj):
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', None)}"


# Objects the pickler may meet while writing a snapshot (besides the atomic types it never shows us).
_SAVE_TYPES = (dict, list, tuple, set, frozenset, collections.OrderedDict, EasyDict,
               torch.Size, torch.device, torch.dtype, torch.storage.TypedStorage, torch.UntypedStorage,
               np.ndarray, np.generic, np.dtype)
# Callables/classes a snapshot may name as globals: exactly what SafeUnpickler resolves.
_SAVE_GLOBALS = {
    'collections.OrderedDict', 'builtins.set', 'builtins.frozenset', 'torch._utils._rebuild_tensor_v2',
    'torch._utils._rebuild_parameter', 'torch._utils._rebuild_parameter_with_state',
    'torch._tensor._rebuild_from_type_v2', 'torch.Tensor', 'torch.nn.parameter.Parameter',
    'torch.storage._load_from_bytes', 'torch.Size', 'torch.device', 'numpy.dtype', 'numpy.ndarray',
    'numpy._core.multiarray.scalar', 'numpy._core.multiarray._reconstruct', 'numpy._core.numeric._frombuffer',
    'numpy.core.multiarray.scalar', 'numpy.core.multiarray._reconstruct', 'numpy.core.numeric._frombuffer',
    'stylefreq.kwargs.EasyDict', '_codecs.encode', _OWN_REBUILD_NAME,
}


class _SnapshotPickler(pickle.Pickler):
    """Writes persistent networks as records and refuses anything `SafeUnpickler` would not read back."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.nn.Module):
            if not persistence.is_persistent(obj):
                raise ValueError(f'cannot save {type(obj).__module__}.{type(obj).__qualname__}: only networks built '
                                 f'with stylefreq.persistence.persistent_class can be stored in a network pickle')
            return (_rebuild_module, (_module_record(obj),))
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


def _umask() -> int:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_network_pkl(path, data: dict, protocol: int = 4):
    """Write a snapshot dict atomically: a temporary file in the same directory, fsync, rename.

    A crash or error mid-write leaves any previous file at `path` untouched and no partial file behind.
    Persistent networks anywhere in `data` are stored as records (class name, constructor arguments,
    tensors); any other torch.nn.Module is refused.
    """
    if not isinstance(data, dict):
        raise TypeError(f'save_network_pkl: data must be a dict, got {type(data).__name__}')
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f'cannot write {path}: directory {directory} does not exist')
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            _SnapshotPickler(f, protocol=protocol).dump(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())          # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:                                           # make the rename itself durable (POSIX)
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ------------------------------------------------------------------------------------------------
# Loading.

def _restore_easydicts(obj):
    if isinstance(obj, _LoadedEasyDict):
        return EasyDict((k, _restore_easydicts(v)) for k, v in obj.items())
    if type(obj) in (dict, collections.OrderedDict):
        for k, v in obj.items():
            obj[k] = _restore_easydicts(v)
        return obj
    if type(obj) is list:
        return [_restore_easydicts(v) for v in obj]
    if type(obj) is tuple:
        return tuple(_restore_easydicts(v) for v in obj)
    return obj


_NETWORK_KEYS = ('G', 'D', 'G_ema', 'augment_pipe')


def _load(f, source):
    head = b''
    if getattr(f, 'seekable', lambda: False)():
        pos = f.tell()
        head = f.read(4)
        f.seek(pos)
    if head.startswith(b'PK\x03\x04'):
        raise UnsupportedPickleError(f'{source} is not a network pickle: it is a zip archive (a torch.save() file?)')
    unpickler = SafeUnpickler(f, source=source)
    try:
        return unpickler.load()
    except (UnsafePickleError, UnsupportedPickleError, RebuildError):
        raise
    except Exception as e:
        raise UnsupportedPickleError(f'{source} is not a network pickle: {type(e).__name__}: {e}') from e


def load_network_pkl(f, force_fp16=False, verbose=True):
    """Load a network pickle (upstream StyleGAN2-ADA-PyTorch or stylefreq) without executing code from it.

    `f`: an open binary file, a path or a URL (see `open_url`). Returns a dict with at least G, D,
    G_ema, training_set_kwargs and augment_pipe (None when absent) plus any other keys in the file.
    Every failure is a `CheckpointError` (or FileNotFoundError / DownloadError for the file itself)
    whose message is one sentence naming the file.
    Upstream networks are rebuilt as stylefreq classes; one without a stylefreq class stays an
    `UpstreamObject`. `force_fp16=True` rebuilds G, D, G_ema with num_fp16_res=4, conv_clamp=256.
    """
    if isinstance(f, (str, os.PathLike)):
        source = os.fspath(f)
        with open_url(source, verbose=verbose) as fh:
            data = _load(fh, source)
    else:
        source = getattr(f, 'name', None) or '<network pickle>'
        data = _load(f, source)

    if not isinstance(data, dict):
        raise UnsupportedPickleError(f'{source} is not a network pickle: it holds a {type(data).__name__} '
                                     f'instead of a dict of networks')
    data = _restore_easydicts(data)
    rebuilt = {}   # id(record) -> module: a network stored under two keys (G is G_ema) stays one object
    for key, value in list(data.items()):
        if isinstance(value, UpstreamObject):
            if id(value) not in rebuilt:
                rebuilt[id(value)] = _rebuild_upstream(value, source, key)
            data[key] = rebuilt[id(value)]
    for key in ('training_set_kwargs',) + _NETWORK_KEYS:
        data.setdefault(key, None)
    for key in _NETWORK_KEYS:
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
    class_name = persistence.class_name_of(module)
    tensors = collections.OrderedDict(module.named_parameters())
    tensors.update(module.named_buffers())
    return _construct(class_name, persistence.init_args_of(module), kwargs, tensors, source, what=key)
