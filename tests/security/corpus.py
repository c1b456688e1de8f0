"""A corpus of hostile network pickles, built by the tests themselves (never committed).

`build(directory, marker)` writes every crafted file into `directory` and returns
{name: Case(path, refusal)}: `refusal` is a piece of the one-sentence error each must produce.
Payloads that would execute code try to create `marker` (a harmless file), so "nothing ran" is
checked by the marker's absence. `live_controls` shows that the same payloads do run under
naive loading, so their refusal means something.
"""

import collections
import dataclasses
import io
import os
import pickle
import warnings

import torch

from stylefreq import checkpoint


NAMES = ['nested_ssd_spatial_kwargs', 'nested_fsg_base_kwargs', 'toplevel_attribute_walk', 'upstream_exported_nested',
         'by_reference_nested', 'stealth_extra_key', 'global_os_system', 'global_builtins_eval', 'upstream_module_src',
         'billion_laughs', 'oversize_layer', 'many_layers', 'deep_nesting', 'self_containing', 'stride0_tensor',
         'storage_size_lie', 'truncated', 'not_a_pickle']


@dataclasses.dataclass
class Case:
    path: str
    refusal: str            # a fragment of the expected error message


class Reduced:
    """Pickles as `fn(*args)`."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class Named:
    """Pickles as the global `module.name` called with `args` (no import needed to write it)."""

    def __init__(self, module, name, args=None):
        self.module, self.name, self.args = module, name, args

    def pickle_into(self, pickler):
        pickler.write(pickle.GLOBAL + f'{self.module}\n{self.name}\n'.encode())
        if self.args is not None:
            pickler.save(self.args)
            pickler.write(pickle.REDUCE)


class _CraftingPickler(pickle._Pickler):
    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, Named):
            obj.pickle_into(self)
            return
        super().save(obj, save_persistent_id)


def dumps(obj, protocol=4) -> bytes:
    buf = io.BytesIO()
    _CraftingPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def own_record(class_name, init_kwargs, tensors=None, init_args=()):
    """stylefreq's snapshot record of a network, as `checkpoint._rebuild_module(record)`."""
    record = dict(format='stylefreq.module', version=1, class_name=class_name, init_args=tuple(init_args),
                  init_kwargs=init_kwargs, tensors=collections.OrderedDict(tensors or {}), training=False)
    return Reduced(checkpoint._rebuild_module, (record,))


def upstream_object(class_name, state):
    """An upstream persistent object (torch_utils.persistence._reconstruct_persistent_obj(meta))."""
    meta = dict(type='class', version=6, module_src='raise SystemExit("module_src ran")',
                class_name=class_name, state=state)
    return Named('torch_utils.persistence', '_reconstruct_persistent_obj', (meta,))


def shell(marker):
    return f"__import__('os').system('touch {marker}')"


def tiny_generator_record():
    from training import networks
    torch.manual_seed(0)
    G = networks.Generator(z_dim=4, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    return G


def _legacy_storage_payload(numel_claimed):
    """A legacy torch.save payload of a 3-element storage whose header claims `numel_claimed`."""
    buf = io.BytesIO()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.save(torch.zeros(3).storage(), buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    assert raw.count(b'K\x03Nt') == 1
    return raw.replace(b'K\x03Nt', b'J' + int(numel_claimed).to_bytes(4, 'little') + b'Nt')


def build(directory, marker) -> dict:
    directory = str(directory)
    marker = str(marker)
    hub_dir = os.path.join(directory, 'hub')
    os.makedirs(hub_dir, exist_ok=True)
    with open(os.path.join(hub_dir, 'hubconf.py'), 'w') as f:
        f.write(f'import pathlib\npathlib.Path({marker!r}).write_text("hubconf ran")\ndef x(): pass\n')
    sympy_route = 'stylefreq.checkpoint.torch._dynamo.eval_frame.sympy.expand'
    hub_route = 'stylefreq.checkpoint.torch.hub.load'
    evil_sympy = dict(class_name=sympy_route, e=shell(marker))
    evil_hub = dict(class_name=hub_route, repo_or_dir=hub_dir, model='x', source='local')

    files = {}

    def put(name, payload, refusal, raw=False):
        path = os.path.join(directory, f'{name}.pkl')
        with open(path, 'wb') as f:
            f.write(payload if raw else dumps(payload))
        files[name] = Case(path, refusal)

    # --- code execution through class names --------------------------------------------------------
    put('nested_ssd_spatial_kwargs',
        dict(D=own_record('stylefreq.ssd.SSDDiscriminator', dict(spatial_kwargs=evil_sympy, c_dim=0,
                                                                  img_resolution=16, img_channels=3))),
        sympy_route)
    put('nested_fsg_base_kwargs',
        dict(G=own_record('stylefreq.freqshift.FrequencyShiftedGenerator', dict(base_kwargs=evil_hub, mode='out'))),
        hub_route)
    put('toplevel_attribute_walk', dict(G=own_record(hub_route, dict(repo_or_dir=hub_dir, model='x', source='local'))),
        hub_route)
    put('upstream_exported_nested',
        dict(D=upstream_object('SSDDiscriminator', dict(format='stylefreq.module', version=1,
                                                       class_name='stylefreq.ssd.SSDDiscriminator', init_args=(),
                                                       init_kwargs=dict(spatial_kwargs=evil_sympy), tensors={},
                                                       training=False))),
        sympy_route)
    put('by_reference_nested',
        dict(D=_by_reference('stylefreq.ssd', 'SSDDiscriminator',
                             dict(_init_args=(), _init_kwargs=dict(spatial_kwargs=evil_sympy), _parameters={},
                                  _buffers={}, _modules={}))),
        sympy_route)
    G = tiny_generator_record()
    stealth = dict(G=G, D=None, G_ema=G, augment_pipe=None,
                   extra=own_record('stylefreq.ssd.SSDDiscriminator', dict(spatial_kwargs=evil_sympy)))
    put('stealth_extra_key', checkpoint_bytes(stealth), sympy_route, raw=True)
    put('global_os_system', Named('os', 'system', (f'touch {marker}',)), "'os.system'")
    put('global_builtins_eval', Named('builtins', 'eval', (shell(marker),)), "'builtins.eval'")
    put('upstream_module_src', dict(G=upstream_object('NoSuchClass', dict(_parameters={}, _buffers={}, _modules={})),
                                    evil=Named('builtins', 'exec', (shell(marker),))), "'builtins.exec'")

    # --- memory and time ----------------------------------------------------------------------------
    laughs = []
    for _ in range(60):
        laughs = [laughs, laughs]
    put('billion_laughs', dict(G=None, bomb=laughs), 'shared references')
    put('oversize_layer', dict(G=own_record('training.networks.FullyConnectedLayer',
                                            dict(in_features=23170, out_features=23170))),
        'far more than')
    put('many_layers', dict(G=own_record('training.networks.MappingNetwork',
                                         dict(z_dim=1, c_dim=0, w_dim=1, num_ws=None, num_layers=10_000_000))),
        'far more than')
    depth = 200_000
    put('deep_nesting', b'\x80\x02' + b']' * depth + b'a' * (depth - 1) + b'.', 'nested deeper', raw=True)
    loop = []
    loop.append(loop)
    put('self_containing', dict(G=None, loop=loop), 'reference cycle')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')                 # TypedStorage deprecation
        storage = torch.zeros(1).storage()
    put('stride0_tensor', dict(G=None, t=Reduced(torch._utils._rebuild_tensor_v2,
                                                 (storage, 0, (100000, 100000), (0, 0), False,
                                                  collections.OrderedDict()))),
        'more elements than its storage')
    put('storage_size_lie', dict(G=None, s=Named('torch.storage', '_load_from_bytes',
                                                 (_legacy_storage_payload(1 << 30),))),
        'declares')
    put('truncated', checkpoint_bytes(dict(G=G))[:300], 'is not a network pickle', raw=True)
    put('not_a_pickle', b'GIF89a' + b'\x00' * 64, 'is not a network pickle', raw=True)
    return files


def checkpoint_bytes(data) -> bytes:
    """What save_network_pkl writes for `data`, with crafted (Reduced/Named) values kept as given."""
    from stylefreq import records
    data = {k: Reduced(checkpoint._rebuild_module, (records.write_record(v),)) if isinstance(v, torch.nn.Module)
            else v for k, v in data.items()}
    return dumps(data)


def _by_reference(module, name, state):
    """A module pickled by reference: NEWOBJ(module.name) + BUILD(state)."""
    return _ByReference(module, name, state)


class _ByReference(Named):
    def __init__(self, module, name, state):
        super().__init__(module, name)
        self.state = state

    def pickle_into(self, pickler):
        pickler.write(pickle.GLOBAL + f'{self.module}\n{self.name}\n'.encode())
        pickler.save(())
        pickler.write(pickle.NEWOBJ)
        pickler.save(self.state)
        pickler.write(pickle.BUILD)


def live_controls(directory, marker):
    """Control: resolved the naive way (import a prefix, then walk attributes), the corpus's hub route
    really runs code from a directory of the attacker's choosing."""
    import importlib
    hub_dir = os.path.join(str(directory), 'hub')
    os.makedirs(hub_dir, exist_ok=True)
    with open(os.path.join(hub_dir, 'hubconf.py'), 'w') as f:
        f.write(f'import pathlib\npathlib.Path({str(marker)!r}).write_text("hubconf ran")\ndef x(): pass\n')
    obj = importlib.import_module('stylefreq.checkpoint')
    for part in 'torch.hub.load'.split('.'):
        obj = getattr(obj, part)
    obj(hub_dir, 'x', source='local', trust_repo=True)
    return os.path.exists(str(marker))
