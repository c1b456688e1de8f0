"""The network-kwargs system (`class_name` plus keyword arguments) and the registry of classes that
may be built from a name read out of a file.

Two ways to turn a dotted name into a class:

* `get_obj_by_name` / `construct_class_by_name`, for names the user wrote (a training
  configuration: `torch.optim.Adam`, `myplugin.networks.Generator`). This is the plug-in point
  shared with StyleGAN2-ADA: any importable class works.
* `resolve_registered`, for names that come out of a file (checkpoint records, a pickle's
  `training_set_kwargs`). The module must be on an explicit list (`allow_module`), it is imported
  only then, the class must be a direct attribute of it, and it must have been registered with
  `register_class` (network classes are registered by `persistence.persistent_class`).
"""

from __future__ import annotations

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


# ---------------------------------------------------------------------------------------------------
# Names a user wrote.

_ALIASES = {}


@contextlib.contextmanager
def class_name_aliases(aliases: dict):
    """Within the block, `get_obj_by_name(name)` returns `aliases[name]` for the names given.

    An exported network (stylefreq.export) rebuilds itself inside a StyleGAN2-ADA checkout, where
    the module name `training.networks` is upstream's: the embedded classes are reached this way.
    """
    saved = dict(_ALIASES)
    _ALIASES.update(aliases)
    try:
        yield
    finally:
        _ALIASES.clear()
        _ALIASES.update(saved)


def _split_name(name) -> tuple:
    if not isinstance(name, str) or '.' not in name.strip('.') or any(not p.isidentifier() for p in name.split('.')):
        raise ValueError(f'class_name must be a dotted name such as "package.module.Class", got {name!r}')
    module_name, _, attr = name.rpartition('.')
    return module_name, attr


def get_obj_by_name(name: str):
    """`module.attr` for name 'module.attr': the module is imported, `attr` is a direct attribute."""
    if name in _ALIASES:
        return _ALIASES[name]
    module_name, attr = _split_name(name)
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f'cannot find {name!r}: module {module_name!r} has no attribute {attr!r}') from None


def construct_class_by_name(*args, class_name: str, **kwargs):
    """Instantiate `class_name(*args, **kwargs)`."""
    cls = get_obj_by_name(class_name)
    if not callable(cls):
        raise TypeError(f'{class_name!r} is not callable')
    return cls(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Names read out of a file.

_REGISTERED = {}
# Modules whose registered classes a file may name. Importing one of them is the only import a
# file can cause.
_ALLOWED_MODULES = {'training.networks', 'training.augment', 'training.dataset', 'stylefreq.ssd',
                    'stylefreq.freqshift'}


def register_class(cls):
    """Class decorator: `cls` may be constructed from a `class_name` read out of a file (if its
    module is allowed, see `allow_module`)."""
    _REGISTERED[f'{cls.__module__}.{cls.__qualname__}'] = cls
    return cls


def allow_module(module_name: str) -> None:
    """Let files name the registered classes of `module_name` (a plug-in's network module)."""
    _split_name(module_name + '.X')
    _ALLOWED_MODULES.add(module_name)


def allowed_modules() -> frozenset:
    return frozenset(_ALLOWED_MODULES)


class UnregisteredClassError(ValueError):
    """A name read out of a file is not a registered class of an allowed module."""


def resolve_registered(name):
    """The registered class called `name`; UnregisteredClassError (one sentence) otherwise.

    Never imports a module that is not on the allowed list and never walks attributes: `name`
    must be '<allowed module>.<ClassName>'.
    """
    try:
        module_name, attr = _split_name(name)
    except ValueError:
        raise UnregisteredClassError(f'{name!r} is not a class name') from None
    if module_name not in _ALLOWED_MODULES:
        raise UnregisteredClassError(f'{name!r} is not in a module that files may name '
                                     f'({", ".join(sorted(_ALLOWED_MODULES))}; see stylefreq.kwargs.allow_module)')
    module = importlib.import_module(module_name)
    cls = module.__dict__.get(attr)
    if cls is None or _REGISTERED.get(name) is not cls:
        raise UnregisteredClassError(f'{name!r} is not a registered class (see stylefreq.kwargs.register_class)')
    return cls


def registered_class(name):
    """Like `resolve_registered`, but None instead of an error."""
    try:
        return resolve_registered(name)
    except UnregisteredClassError:
        return None


def check_class_names(obj, max_depth: int = 64) -> None:
    """Raise UnregisteredClassError if any `class_name` value nested in dicts/lists/tuples of `obj`
    (constructor arguments read from a file) is not a registered class; iterative, depth-bounded."""
    stack = [(obj, 0)]
    seen = set()
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise UnregisteredClassError(f'constructor arguments nested deeper than {max_depth} levels')
        if isinstance(node, (dict, list, tuple)):
            if id(node) in seen:
                continue
            seen.add(id(node))
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'class_name':
                    resolve_registered(value)
                stack.append((value, depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)
