"""Network records: how a network is stored and how it is rebuilt, without code from the file.

A record is (dotted class name, constructor arguments, name -> tensor). stylefreq writes records
(`write_record`: its snapshots, and the state of the upstream persistent objects that
`python -m stylefreq.export` writes) and reads three kinds (`spec_of`): its own, upstream persistent
objects (mapped to the stylefreq class of the same name), and modules pickled by reference by a
patched upstream checkout.

`build` turns a record into a module:
1. the class is resolved through the registry (`stylefreq.kwargs.resolve_registered`), and so is
   every `class_name` nested in the constructor arguments (wrappers build inner networks);
2. the class is constructed on the `meta` device, with a budget on how many submodules and tensor
   elements it may register (at most what the record's tensors hold, with some slack), so a record
   that would allocate 4 GB, or create ten million layers, is refused before anything is allocated;
3. the tensor names and shapes must equal the record's exactly;
4. the record's tensors are assigned in place of the meta tensors (no second copy, no random
   initialisation). A class that keeps other tensors is constructed again on the CPU (its size is
   known to be bounded by then) and the tensors are copied in.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses

import torch

from stylefreq import kwargs as sf_kwargs
from stylefreq import persistence
from stylefreq.safe_pickle import OwnRecord, ReferencedModule, UpstreamObject, plain

FORMAT = 'stylefreq.module'
VERSION = 1

# Upstream class name (as stored in its pickles) -> stylefreq class.
UPSTREAM_CLASSES = {name: f'training.networks.{name}' for name in (
    'FullyConnectedLayer', 'Conv2dLayer', 'MappingNetwork', 'SynthesisLayer', 'ToRGBLayer',
    'SynthesisBlock', 'SynthesisNetwork', 'Generator', 'DiscriminatorBlock', 'MinibatchStdLayer',
    'DiscriminatorEpilogue', 'Discriminator')}
UPSTREAM_CLASSES['AugmentPipe'] = 'training.augment.AugmentPipe'


class RecordError(ValueError):
    """A record cannot become a network (one sentence, without the file name)."""


class UnsafeRecordError(RecordError):
    """A record names a class (or nested class_name) that files may not construct."""


def register_upstream_class(upstream_name: str, class_name: str) -> None:
    """Rebuild upstream persistent objects of class `upstream_name` (e.g. a fork's network) as the
    registered class `class_name`."""
    UPSTREAM_CLASSES[upstream_name] = class_name


# ---------------------------------------------------------------------------------------------------
# Writing.

def tensors_of(module: torch.nn.Module) -> 'collections.OrderedDict[str, torch.Tensor]':
    """name -> detached CPU copy of every parameter and buffer."""
    out = collections.OrderedDict()
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        out[name] = t.detach().to('cpu', copy=True)
    return out


def write_record(module: torch.nn.Module, class_name: str | None = None) -> dict:
    """The record of a persistent network (plain data + tensors). `class_name` overrides the
    recorded name (an exported network's class inside an upstream checkout is a subclass)."""
    if '_init_kwargs' not in module.__dict__:
        cls = type(module)
        raise RecordError(f'{cls.__module__}.{cls.__qualname__} is not a network built with '
                          f'stylefreq.persistence.persistent_class')
    return dict(format=FORMAT, version=VERSION, class_name=class_name or persistence.class_name_of(module),
                init_args=plain(tuple(module.__dict__.get('_init_args', ()))),
                init_kwargs=plain(dict(module.__dict__['_init_kwargs'])),
                tensors=tensors_of(module), training=bool(module.training))


def is_record(obj) -> bool:
    return isinstance(obj, dict) and obj.get('format') == FORMAT


# ---------------------------------------------------------------------------------------------------
# Reading.

@dataclasses.dataclass
class Spec:
    """What rebuilding a network needs."""
    class_name: str
    init_args: tuple
    init_kwargs: dict
    tensors: 'collections.OrderedDict[str, torch.Tensor]'
    what: str                       # how messages name it, e.g. "upstream Generator"


def spec_of(obj) -> Spec | None:
    """The Spec of an inert record; None for an upstream class stylefreq has no counterpart for."""
    if isinstance(obj, OwnRecord):
        return spec_of_record(obj.record)
    if isinstance(obj, UpstreamObject):
        state = obj.get_state()
        if is_record(state):                # written by python -m stylefreq.export: the state is a record
            spec = spec_of_record(state)
            spec.what = f'exported {obj.class_name}'
            return spec
        name = UPSTREAM_CLASSES.get(obj.class_name)
        if name is None:
            return None
        return Spec(name, obj.init_args, obj.init_kwargs, obj.tensors(), f'upstream {obj.class_name}')
    if isinstance(obj, ReferencedModule):
        if '_init_kwargs' not in obj.get_state():
            raise RecordError(f'{obj.class_name} was pickled without its constructor arguments (it is not a '
                              f'network built with stylefreq.persistence.persistent_class)')
        return Spec(obj.class_name, obj.init_args, obj.init_kwargs, obj.tensors(), obj.class_name)
    raise TypeError(f'not a network record: {type(obj).__name__}')


def spec_of_record(record) -> Spec:
    if not is_record(record):
        raise RecordError('malformed stylefreq module record')
    if record.get('version') != VERSION:
        raise RecordError(f"stylefreq module record version {record.get('version')!r} is not supported "
                          f"(this stylefreq reads version {VERSION})")
    name, args, kwargs, tensors = (record.get(k) for k in ('class_name', 'init_args', 'init_kwargs', 'tensors'))
    if not isinstance(name, str) or not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict) \
            or not isinstance(tensors, dict) or not all(isinstance(k, str) for k in kwargs):
        raise RecordError('malformed stylefreq module record')
    for tname, t in tensors.items():
        if not isinstance(tname, str) or not isinstance(t, torch.Tensor):
            raise RecordError(f'malformed stylefreq module record (tensor {tname!r:.80})')
    return Spec(name, tuple(plain(tuple(args))), plain(dict(kwargs)),
                collections.OrderedDict((k, t.detach()) for k, t in tensors.items()), name)


def check_spec(spec: Spec) -> type:
    """The class a Spec may be built as; UnsafeRecordError if it or a nested class_name is not registered."""
    try:
        cls = sf_kwargs.resolve_registered(spec.class_name)
        sf_kwargs.check_class_names(spec.init_args)
        sf_kwargs.check_class_names(spec.init_kwargs)
    except sf_kwargs.UnregisteredClassError as e:
        raise UnsafeRecordError(f'refusing to construct {spec.what}: {e}') from None
    if not (issubclass(cls, torch.nn.Module) and getattr(cls, '_stylefreq_persistent', False)):
        raise UnsafeRecordError(f'refusing to construct {spec.what}: {spec.class_name} is not a network class')
    return cls


class _BudgetExceeded(Exception):
    pass


@contextlib.contextmanager
def _registration_budget(max_modules: int, max_tensors: int, max_elements: int):
    """Abort any module construction in this block that registers more than the given numbers of
    submodules, tensors or tensor elements (torch's global registration hooks)."""
    count = dict(modules=0, tensors=0, elements=0)

    def on_module(module, name, submodule):
        count['modules'] += 1
        if count['modules'] > max_modules:
            raise _BudgetExceeded(f'more than {max_modules} submodules')

    def on_tensor(module, name, tensor):
        if tensor is not None:
            count['tensors'] += 1
            count['elements'] += tensor.numel()
            if count['tensors'] > max_tensors:
                raise _BudgetExceeded(f'more than {max_tensors} tensors')
            if count['elements'] > max_elements:
                raise _BudgetExceeded(f'tensors of more than {max_elements:,} elements')

    handles = [torch.nn.modules.module.register_module_module_registration_hook(on_module),
               torch.nn.modules.module.register_module_parameter_registration_hook(on_tensor),
               torch.nn.modules.module.register_module_buffer_registration_hook(on_tensor)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _named_tensors(module):
    out = collections.OrderedDict(module.named_parameters())
    out.update(module.named_buffers())
    return out


def _shape(t) -> str:
    return str(list(t.shape))


def _check_names_and_shapes(module, spec: Spec):
    own = _named_tensors(module)
    for name, t in own.items():
        if name not in spec.tensors:
            raise RecordError(f"{spec.what} has tensor '{name}' {_shape(t)}, but the file has no tensor of that name")
    for name, t in spec.tensors.items():
        if name not in own:
            raise RecordError(f"the file holds tensor '{name}' {_shape(t)}, which {spec.what} does not have")
        if tuple(t.shape) != tuple(own[name].shape):
            raise RecordError(f"tensor '{name}' of {spec.what} has shape {_shape(t)} in the file but "
                              f"{_shape(own[name])} in the rebuilt network")
    return own


def _construct(cls, spec: Spec, device):
    with torch.device(device):
        return cls(*spec.init_args, **spec.init_kwargs)


def _assign(module, state):
    """Put the state's tensors in place of the module's (meta) parameters and buffers, by name."""
    for prefix, m in module.named_modules():
        prefix = prefix + '.' if prefix else ''
        for name, p in m._parameters.items():
            if p is not None:
                m._parameters[name] = torch.nn.Parameter(state[prefix + name], requires_grad=False)
        for name, b in m._buffers.items():
            if b is not None:
                m._buffers[name] = state[prefix + name]


def _leftover_meta_tensors(module) -> bool:
    for m in module.modules():
        for t in list(m._parameters.values()) + list(m._buffers.values()) + list(vars(m).values()):
            if isinstance(t, torch.Tensor) and t.is_meta:
                return True
    return False


def build(spec: Spec, used_storages: set | None = None) -> torch.nn.Module:
    """A module in eval mode, without gradients, on the CPU, holding the Spec's tensors (see module
    docstring). `used_storages` (shared across one file) makes a tensor that another network of the
    same file already holds be copied instead of shared."""
    cls = check_spec(spec)
    elements = sum(t.numel() for t in spec.tensors.values())
    budget = dict(max_modules=4 * len(spec.tensors) + 256, max_tensors=4 * len(spec.tensors) + 256,
                  max_elements=2 * elements + (1 << 20))
    try:
        with _registration_budget(**budget):
            module = _construct(cls, spec, 'meta')
    except _BudgetExceeded as e:
        raise RecordError(f'refusing to construct {spec.what}({_kwargs_repr(spec.init_kwargs)}): it would create '
                          f'{e}, far more than the {len(spec.tensors)} tensors of {elements:,} elements the file '
                          f'holds') from None
    except Exception as e:
        raise RecordError(f'cannot rebuild {spec.what} as {spec.class_name}({_kwargs_repr(spec.init_kwargs)}): '
                          f'{type(e).__name__}: {e}') from None
    own = _check_names_and_shapes(module, spec)

    used_storages = set() if used_storages is None else used_storages
    state = {}
    for name, dst in own.items():
        src = spec.tensors[name].to(dtype=dst.dtype)
        key = (src.untyped_storage().data_ptr(), src.untyped_storage().nbytes())
        if key in used_storages and src.numel():
            src = src.clone()
        used_storages.add(key)
        state[name] = src
    _assign(module, state)
    if _leftover_meta_tensors(module):                       # keeps tensors the state dict does not cover: build for real
        module = _construct(cls, spec, 'cpu')
        with torch.no_grad():
            for name, dst in _named_tensors(module).items():
                dst.copy_(state[name])
    return module.eval().requires_grad_(False)


def _kwargs_repr(kwargs, limit=200):
    s = ', '.join(f'{k}={v!r}' for k, v in kwargs.items())
    return s if len(s) <= limit else s[:limit] + '...'
