"""Recording constructor arguments so a network can be rebuilt from (class_name, kwargs, tensors).

Upstream StyleGAN2-ADA pickles embed the source code of every network class and execute it on load.
stylefreq instead records, for each top-level network, the dotted class name and the constructor
arguments; a checkpoint stores those plus the state dict, and loading re-runs the constructor of an
allow-listed class and copies the tensors in (see `stylefreq.checkpoint`). Nothing from the file
is executed.
"""

import copy
import functools

from stylefreq.kwargs import register_class


def persistent_class(cls):
    """Class decorator: instances remember `init_args`, `init_kwargs` and their dotted class name,
    and the class is registered as one a checkpoint may construct (`kwargs.register_class`).

    The arguments are deep-copied at construction time, so later mutation of a config dict by the
    caller does not change what a checkpoint records.
    """
    original_init = cls.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        # Only the outermost __init__ of a decorated hierarchy records (a decorated subclass calling
        # a decorated base's __init__ must not overwrite the subclass's arguments).
        if type(self).__init__ is __init__ or '_init_kwargs' not in self.__dict__:
            object.__setattr__(self, '_init_args', copy.deepcopy(tuple(args)))
            object.__setattr__(self, '_init_kwargs', copy.deepcopy(dict(kwargs)))

    cls.__init__ = __init__
    cls._stylefreq_persistent = True
    return register_class(cls)


def is_persistent(obj) -> bool:
    return getattr(type(obj), '_stylefreq_persistent', False) and '_init_kwargs' in obj.__dict__


def class_name_of(obj) -> str:
    cls = type(obj)
    return f'{cls.__module__}.{cls.__qualname__}'


def init_kwargs_of(obj) -> dict:
    return copy.deepcopy(obj.__dict__['_init_kwargs'])


def init_args_of(obj) -> tuple:
    return copy.deepcopy(obj.__dict__['_init_args'])
