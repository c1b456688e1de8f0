"""The network-kwargs system: objects described by a dict holding `class_name` plus kwargs.

This is the plug-in point shared with StyleGAN2-ADA: a training configuration names every network,
loss and optimizer by a dotted `class_name`, so any importable class can be dropped in
(`stylefreq.ssd.SSDDiscriminator`, `training.networks.Generator`, `torch.optim.Adam`, ...).
"""

import contextlib
import importlib


class EasyDict(dict):
    """A dict whose keys are also attributes (`d.lr` is `d['lr']`)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]


# Classes that may be built from a name read out of a file (a checkpoint's network records, its
# training_set_kwargs). Filled by `register_class` (and by persistence.persistent_class).
_REGISTERED = {}


def register_class(cls):
    """Class decorator: `cls` may be constructed from a `class_name` read out of a file.

    Network classes get this through `persistence.persistent_class`; other classes that a pickle
    names (datasets in `training_set_kwargs`) are decorated with it directly.
    """
    _REGISTERED[f'{cls.__module__}.{cls.__qualname__}'] = cls
    return cls


def registered_class(name: str):
    """The registered class called `name` (module path + class name), or None."""
    return _REGISTERED.get(name)


# Dotted names resolved to given objects instead of by import, while `class_name_aliases` is active.
_ALIASES = {}


@contextlib.contextmanager
def class_name_aliases(aliases: dict):
    """Within the block, `get_obj_by_name(name)` returns `aliases[name]` for the names given.

    An exported network (stylefreq.export) rebuilds itself inside a StyleGAN2-ADA checkout, where the
    module name `training.networks` belongs to upstream: the embedded stylefreq classes are reached
    through these aliases instead.
    """
    saved = dict(_ALIASES)
    _ALIASES.update(aliases)
    try:
        yield
    finally:
        _ALIASES.clear()
        _ALIASES.update(saved)


def get_obj_by_name(name: str):
    """Resolve a dotted name: the longest importable module prefix, then attribute lookups."""
    if not isinstance(name, str) or not name:
        raise ValueError(f'class_name must be a non-empty dotted name, got {name!r}')
    if name in _ALIASES:
        return _ALIASES[name]
    parts = name.split('.')
    for split in range(len(parts) - 1, 0, -1):
        module_name = '.'.join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # Keep looking only if the missing module is the one we asked for (or a parent of it);
            # an ImportError raised from *inside* an existing module is a real error.
            if e.name is not None and module_name.startswith(e.name):
                continue
            raise
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise ImportError(f'cannot find {name!r}: module {module_name!r} has no attribute path '
                              f'{".".join(parts[split:])!r}') from None
        return obj
    raise ImportError(f'cannot import {name!r}: no importable module prefix')


def construct_class_by_name(*args, class_name: str, **kwargs):
    """Instantiate `class_name(*args, **kwargs)`."""
    cls = get_obj_by_name(class_name)
    if not callable(cls):
        raise TypeError(f'{class_name!r} is not callable')
    return cls(*args, **kwargs)
