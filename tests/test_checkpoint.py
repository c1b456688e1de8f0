"""stylefreq.checkpoint: safe loading of upstream-format and own pickles, atomic saving, the URL cache.

Upstream-format pickles are built here from stylefreq modules: each network becomes a record shaped
like upstream's persistence record (type/version/module_src/class_name/state, with `state` laid out
like a module's __dict__), pickled through a stand-in `torch_utils.persistence` module that exists
only while dumping. No upstream code is involved; `module_src` is a payload that would create a
marker file if anything executed it.
"""

import collections
import hashlib
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest
import torch

import builders

from stylefreq import checkpoint, download, files, records, safe_pickle
from stylefreq import kwargs as sf_kwargs
from stylefreq.checkpoint import (RebuildError, UnsafePickleError, UnsupportedPickleError, UpstreamObject,
                                  load_network_pkl, save_network_pkl)
from stylefreq.download import DownloadError, open_url
from stylefreq.kwargs import EasyDict
from stylefreq.persistence import persistent_class

from training import augment


# ---------------------------------------------------------------------------------------------
# Small persistent modules (module path: this test module, allowed by the `allow_tests` fixture).

@persistent_class
class TinyBlock(torch.nn.Module):
    def __init__(self, channels, frozen=False):
        super().__init__()
        self.fc = torch.nn.Linear(channels, channels)
        self.register_buffer('running', torch.arange(channels, dtype=torch.float32))
        if frozen:  # like Freeze-D: the weight lives among the buffers under the same name
            self.register_buffer('scale', torch.linspace(0.5, 1.5, channels))
        else:
            self.scale = torch.nn.Parameter(torch.linspace(0.5, 1.5, channels))
        self.gain = 0.5

    def forward(self, x):
        return self.fc(x) * self.scale * self.gain + self.running


@persistent_class
class TinyNet(torch.nn.Module):
    def __init__(self, in_features, channels, block_kwargs={}, lr_multiplier=1.0):
        super().__init__()
        self.inp = torch.nn.Linear(in_features, channels)
        self.block = TinyBlock(channels, **block_kwargs)
        self.lr_multiplier = lr_multiplier

    def forward(self, x):
        return self.block(self.inp(x))


class NotPersistentNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


@pytest.fixture
def allow_tests(monkeypatch):
    """Let checkpoints construct the classes of this test module (undone after the test)."""
    monkeypatch.setattr(sf_kwargs, '_ALLOWED_MODULES', set(sf_kwargs._ALLOWED_MODULES))
    monkeypatch.setattr(records, 'UPSTREAM_CLASSES', dict(records.UPSTREAM_CLASSES))
    sf_kwargs.allow_module(TinyNet.__module__)
    records.register_upstream_class('TinyNet', f'{TinyNet.__module__}.TinyNet')


def tiny_net(seed=0, frozen=True):
    torch.manual_seed(seed)
    return TinyNet(5, 4, block_kwargs=dict(frozen=frozen), lr_multiplier=0.01).eval()


def tiny_generator(c_dim=0, seed=0, **synthesis_kwargs):
    return builders.tiny_generator(z_dim=8, c_dim=c_dim, seed=seed, **synthesis_kwargs)


def tiny_discriminator(c_dim=0, seed=1, freeze_layers=0):
    return builders.tiny_discriminator(c_dim=c_dim, seed=seed, block_kwargs=dict(freeze_layers=freeze_layers),
                                       epilogue_kwargs=dict(mbstd_group_size=2))


def all_tensors(module):
    out = collections.OrderedDict(module.named_parameters())
    out.update(module.named_buffers())
    return out


def assert_same_tensors(a, b):
    ta, tb = all_tensors(a), all_tensors(b)
    assert list(ta) == list(tb)
    for name in ta:
        assert ta[name].shape == tb[name].shape, name
        assert torch.equal(ta[name].detach(), tb[name].detach()), name


# ---------------------------------------------------------------------------------------------
# Building upstream-format pickles.

def marker_source(marker):
    return f'import pathlib\npathlib.Path({str(marker)!r}).write_text("module_src was executed")\n'


class UpstreamFormat:
    """Stand-ins for the upstream modules a pickle names, present in sys.modules only while dumping."""

    def __init__(self, marker):
        self.marker = marker
        tu = types.ModuleType('torch_utils')
        self.persistence = types.ModuleType('torch_utils.persistence')

        def _reconstruct_persistent_obj(meta):  # never called by the code under test
            raise AssertionError('the stand-in upstream hook must not be called')
        _reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
        _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
        self.persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
        tu.persistence = self.persistence

        dn = types.ModuleType('dnnlib')
        util = types.ModuleType('dnnlib.util')
        self.EasyDict = type('EasyDict', (dict,), {'__module__': 'dnnlib.util'})
        util.EasyDict = self.EasyDict
        dn.util = util
        self.modules = {'torch_utils': tu, 'torch_utils.persistence': self.persistence, 'dnnlib': dn,
                        'dnnlib.util': util}

    def easydict(self, obj):
        if isinstance(obj, dict):
            return self.EasyDict((k, self.easydict(v)) for k, v in obj.items())
        return obj

    def record(self, module, version=6, class_name=None):
        """An upstream-style persistent record of `module` (a stylefreq module)."""
        state = {}
        for key, value in module.__dict__.items():
            if key == '_modules':
                value = {name: self.record(child, version) for name, child in value.items()}
            elif key in ('_parameters', '_buffers'):
                value = dict(value)
            elif key == '_init_kwargs':
                value = self.easydict(value)
            elif isinstance(value, float):
                value = np.float64(value)          # upstream's gains are numpy scalars
            elif not isinstance(value, (bool, int, str, type(None), tuple, list, dict, set)):
                continue
            state[key] = value
        meta = dict(type='class', version=version, module_src=marker_source(self.marker),
                    class_name=class_name or type(module).__name__, state=state)
        return _Reduced(self.persistence._reconstruct_persistent_obj, (meta,))

    def dumps(self, obj, protocol):
        saved = {name: sys.modules.get(name) for name in self.modules}
        sys.modules.update(self.modules)
        try:
            return pickle.dumps(obj, protocol=protocol)
        finally:
            for name, old in saved.items():
                if old is None:
                    del sys.modules[name]
                else:
                    sys.modules[name] = old


class _Reduced:
    """Pickles as `fn(*args)`."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.fixture
def upstream(tmp_path):
    return UpstreamFormat(tmp_path / 'MODULE_SRC_EXECUTED')


def write(path, data: bytes):
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# (a) Upstream-format snapshots.

@pytest.mark.parametrize('protocol', [3, 4])
def test_upstream_snapshot_rebuilds_real_networks(tmp_path, upstream, protocol):
    G = tiny_generator().eval()
    G_ema = tiny_generator(seed=3).eval()
    D = tiny_discriminator(freeze_layers=2).eval()
    snapshot = dict(training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path='/d.zip',
                                             resolution=16, xflip=False),
                    G=upstream.record(G), D=upstream.record(D), G_ema=upstream.record(G_ema), augment_pipe=None)
    raw = upstream.dumps(snapshot, protocol)
    assert b'torch_utils.persistence' in raw and b'module_src was executed' in raw
    assert 'torch_utils' not in sys.modules and 'dnnlib' not in sys.modules

    data = load_network_pkl(write(tmp_path / 'snap.pkl', raw))
    assert not upstream.marker.exists()
    assert 'torch_utils' not in sys.modules and 'dnnlib' not in sys.modules
    assert set(data) == {'training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe'}
    assert data['augment_pipe'] is None
    assert data['training_set_kwargs']['resolution'] == 16
    for key, ref in [('G', G), ('D', D), ('G_ema', G_ema)]:
        net = data[key]
        assert type(net) is type(ref)
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        assert_same_tensors(net, ref)
        kwargs = net._init_kwargs
        assert kwargs == ref._init_kwargs
        assert type(kwargs) is dict and all(type(v) is dict for v in kwargs.values() if isinstance(v, dict))
    # Freeze-D: the frozen weights came from `_buffers` and landed in buffers again.
    assert 'b16.fromrgb.weight' in dict(data['D'].named_buffers())
    if protocol == 3:
        return  # identical tensors imply identical outputs; run the networks once
    z = torch.randn(2, 8)
    assert torch.equal(data['G_ema'](z, None, noise_mode='const'), G_ema(z, None, noise_mode='const'))
    img = torch.randn(2, 3, 16, 16)
    assert torch.equal(data['D'](img, None), D(img, None))


@pytest.mark.parametrize('protocol', [3, 4])
def test_upstream_records_of_small_modules(tmp_path, upstream, allow_tests, protocol):
    ref = tiny_net()
    rec = upstream.record(ref)
    raw = upstream.dumps(dict(G=rec, D=rec, G_ema=rec), protocol)
    data = load_network_pkl(io.BytesIO(raw))
    assert not upstream.marker.exists()
    net = data['G']
    assert data['D'] is net and data['G_ema'] is net   # one object in the file, one network after loading
    assert type(net) is TinyNet and data['training_set_kwargs'] is None and data['augment_pipe'] is None
    assert_same_tensors(net, ref)
    assert 'block.scale' in dict(net.named_buffers())                      # frozen weight
    assert net._init_kwargs == {'block_kwargs': {'frozen': True}, 'lr_multiplier': 0.01}
    assert net._init_args == (5, 4)
    x = torch.randn(2, 5)
    assert torch.equal(net(x), ref(x))


def test_upstream_numpy_scalars_become_python_numbers(upstream):
    ref = tiny_net()
    rec = upstream.record(ref)
    rec.args[0]['state']['_init_kwargs']['lr_multiplier'] = np.float32(0.25)
    obj = safe_pickle.SafeUnpickler(io.BytesIO(upstream.dumps(rec, 4))).load()
    assert isinstance(obj, UpstreamObject)
    assert obj.class_name == 'TinyNet' and obj.version == 6 and 'pathlib' in obj.module_src
    assert type(obj.init_kwargs['lr_multiplier']) is float and obj.init_kwargs['lr_multiplier'] == 0.25
    assert isinstance(obj.state['_modules']['block'].state['gain'], np.floating)   # stored as numpy
    assert list(obj.tensors()) == list(all_tensors(ref))
    assert not (upstream.marker.exists())


@pytest.mark.parametrize('protocol', [2, 3])
def test_upstream_numpy1_global_names(upstream, allow_tests, protocol):
    """numpy 1.x pickles name numpy.core.multiarray.scalar (numpy 2 writes numpy._core...)."""
    ref = tiny_net()
    raw = upstream.dumps(dict(G=upstream.record(ref), D=None, G_ema=None), protocol)
    assert b'cnumpy._core.multiarray\nscalar\n' in raw
    raw = raw.replace(b'cnumpy._core.multiarray\nscalar\n', b'cnumpy.core.multiarray\nscalar\n')
    data = load_network_pkl(io.BytesIO(raw))
    assert_same_tensors(data['G'], ref)


def test_upstream_class_without_stylefreq_counterpart_is_kept(upstream, allow_tests):
    """Nothing is lost when no stylefreq class exists: the record keeps class name, kwargs, tensors."""
    ref = tiny_net()
    raw = upstream.dumps(dict(G=upstream.record(ref), D=upstream.record(ref), G_ema=upstream.record(ref),
                              augment_pipe=upstream.record(ref, class_name='SomePipe'),
                              extra=upstream.record(ref, class_name='SomeForkClass')), 4)
    with pytest.warns(UserWarning) as warned:
        data = load_network_pkl(io.BytesIO(raw))
    messages = sorted(str(w.message) for w in warned)
    assert len(messages) == 2
    assert 'SomePipe' in messages[0] and 'SomeForkClass' in messages[1]
    assert all('no stylefreq class' in m for m in messages)
    pipe = data['augment_pipe']
    assert isinstance(pipe, UpstreamObject) and pipe.class_name == 'SomePipe'
    assert pipe.init_kwargs == {'block_kwargs': {'frozen': True}, 'lr_multiplier': 0.01}
    assert pipe.init_args == (5, 4)
    assert all(torch.equal(pipe.tensors()[n], t) for n, t in all_tensors(ref).items())
    assert isinstance(data['extra'], UpstreamObject) and data['extra'].class_name == 'SomeForkClass'
    assert not upstream.marker.exists()


def test_upstream_class_mapped_to_an_unregistered_class_is_refused(upstream, allow_tests):
    records.register_upstream_class('MissingPipe', 'stylefreq.no_such_module.MissingPipe')
    raw = upstream.dumps(dict(G=None, augment_pipe=upstream.record(tiny_net(), class_name='MissingPipe')), 4)
    with pytest.raises(UnsafePickleError, match='stylefreq.no_such_module'):
        load_network_pkl(io.BytesIO(raw))


def test_upstream_augment_pipe_is_rebuilt(upstream):
    """ADA's p lives in a buffer of the pipe; it must survive the trip."""
    assert records.UPSTREAM_CLASSES['AugmentPipe'] == 'training.augment.AugmentPipe'
    ref = augment.AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1,
                              contrast=1, lumaflip=1, hue=1, saturation=1).eval()
    ref.p.fill_(0.3125)
    data = load_network_pkl(io.BytesIO(upstream.dumps(dict(augment_pipe=upstream.record(ref)), 3)))
    pipe = data['augment_pipe']
    assert type(pipe) is augment.AugmentPipe and pipe.p.item() == 0.3125
    assert_same_tensors(pipe, ref)
    assert pipe._init_kwargs == ref._init_kwargs
    assert not upstream.marker.exists()


def test_upstream_wrong_version(upstream, allow_tests):
    raw = upstream.dumps(dict(G=upstream.record(tiny_net(), version=5)), 4)
    with pytest.raises(UnsupportedPickleError, match='version 5'):
        load_network_pkl(io.BytesIO(raw))


def test_upstream_shape_mismatch_names_tensor_shapes_and_file(tmp_path, upstream, allow_tests):
    rec = upstream.record(tiny_net())
    inp = rec.args[0]['state']['_modules']['inp'].args[0]['state']
    inp['_parameters']['weight'] = torch.zeros(4, 6)
    path = write(tmp_path / 'bad.pkl', upstream.dumps(dict(G=rec), 4))
    with pytest.raises(RebuildError) as e:
        load_network_pkl(path)
    msg = str(e.value)
    assert "'inp.weight'" in msg and '[4, 6]' in msg and '[4, 5]' in msg and 'bad.pkl' in msg


def test_upstream_missing_and_extra_tensors(upstream, allow_tests):
    rec = upstream.record(tiny_net())
    del rec.args[0]['state']['_modules']['inp'].args[0]['state']['_parameters']['bias']
    with pytest.raises(RebuildError, match=r"'inp\.bias'"):
        load_network_pkl(io.BytesIO(upstream.dumps(dict(G=rec), 4)))
    rec = upstream.record(tiny_net())
    rec.args[0]['state']['_buffers']['surplus'] = torch.zeros(3)
    with pytest.raises(RebuildError, match="'surplus'.*does not have"):
        load_network_pkl(io.BytesIO(upstream.dumps(dict(G=rec), 4)))


def test_upstream_none_entries_are_skipped(upstream, allow_tests):
    ref = tiny_net()
    rec = upstream.record(ref)
    rec.args[0]['state']['_buffers']['unused'] = None
    data = load_network_pkl(io.BytesIO(upstream.dumps(dict(G=rec), 3)))
    assert_same_tensors(data['G'], ref)


def test_patched_checkout_snapshot_wrappers_by_reference(tmp_path, upstream):
    """What a patched upstream checkout writes: stylefreq's wrapper pickled by reference (its class
    named as a global, its __dict__ as state), holding upstream persistent networks inside."""
    from stylefreq.ssd import SSDDiscriminator
    torch.manual_seed(0)
    D = SSDDiscriminator(spatial_kwargs=dict(class_name='training.networks.Discriminator', channel_base=256,
                                             channel_max=16, epilogue_kwargs=dict(mbstd_group_size=2)),
                         c_dim=0, img_resolution=16, img_channels=3, ssd_lambda=0.6).eval()
    with torch.no_grad():
        D.classifier.weight.add_(0.5)

    class CheckoutPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if type(obj).__module__ == 'training.networks':
                return upstream.record(obj).__reduce__()
            return NotImplemented

    buf = io.BytesIO()
    saved = {name: sys.modules.get(name) for name in upstream.modules}
    sys.modules.update(upstream.modules)
    try:
        CheckoutPickler(buf, protocol=4).dump(dict(G=None, D=D, G_ema=None, augment_pipe=None))
    finally:
        for name, old in saved.items():
            if old is None:
                del sys.modules[name]
            else:
                sys.modules[name] = old
    raw = buf.getvalue()
    assert b'stylefreq.ssd\nSSDDiscriminator' in raw or b'SSDDiscriminator' in raw
    loaded = load_network_pkl(write(tmp_path / 'patched.pkl', raw))['D']
    assert type(loaded) is SSDDiscriminator and loaded.ssd_lambda == 0.6
    assert_same_tensors(loaded, D)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded(x, None), D(x, None))
    assert not upstream.marker.exists()


def test_tensorflow_pickle_is_refused_clearly(tmp_path):
    raw = b'(cdnnlib.tflib.network\nNetwork\n)\x81}b' * 3 + b't.'
    path = write(tmp_path / 'karras2019.pkl', raw)
    with pytest.raises(UnsupportedPickleError) as e:
        load_network_pkl(path)
    msg = str(e.value)
    assert 'TensorFlow' in msg and 'legacy.py' in msg and 'karras2019.pkl' in msg


# ---------------------------------------------------------------------------------------------
# (b) Malicious pickles: refused with the global named; nothing runs.

def _evil_cmd(marker):
    return f'touch {marker}'


def _evil_cases(marker):
    cmd = _evil_cmd(marker).encode()
    code = f'open({str(marker)!r}, "w").write("x")'
    import subprocess
    return {
        'os.system GLOBAL': (b"cos\nsystem\n(S'" + cmd + b"'\ntR.", 'os.system'),
        'os.system INST': (b"(S'" + cmd + b"'\nios\nsystem\n.", 'os.system'),
        'posix.system': (pickle.dumps(_Reduced(os.system, (_evil_cmd(marker),)), protocol=4), 'system'),
        'builtins.eval': (pickle.dumps(_Reduced(eval, (code,)), protocol=4), 'builtins.eval'),
        'builtins.exec': (pickle.dumps(_Reduced(exec, (code,)), protocol=3), 'builtins.exec'),
        'getattr chain': (b"c__builtin__\ngetattr\n(c__builtin__\n__import__\n(S'os'\ntRS'system'\ntR(S'"
                          + cmd + b"'\ntR.", 'builtins.getattr'),
        'builtins.__import__': (b"c__builtin__\n__import__\n(S'os'\ntR.", 'builtins.__import__'),
        'subprocess.Popen': (pickle.dumps(_Reduced(subprocess.Popen, (['touch', str(marker)],)), protocol=4),
                             'subprocess.Popen'),
        'nt.system': (b"cnt\nsystem\n(S'" + cmd + b"'\ntR.", 'nt.system'),
        'torch.load': (b"ctorch\nload\n(S'x'\ntR.", 'torch.load'),
        'numpy.load': (b"cnumpy\nload\n(S'x'\ntR.", 'numpy.load'),
        'inside a snapshot': (pickle.dumps(dict(G=None, D=None, evil=_Reduced(exec, (code,))), protocol=4),
                              'builtins.exec'),
        'copyreg reconstructor': (b"ccopy_reg\n_reconstructor\n(cos\n_wrap_close\nc__builtin__\nobject\nNtR.",
                                  'os._wrap_close'),
    }


@pytest.mark.parametrize('case', list(_evil_cases('M')))
def test_malicious_globals_are_refused(tmp_path, case):
    marker = tmp_path / 'PWNED'
    raw, name = _evil_cases(marker)[case]
    path = write(tmp_path / 'evil.pkl', raw)
    with pytest.raises(UnsafePickleError) as e:
        load_network_pkl(path)
    msg = str(e.value)
    assert f"'{name}" in msg or f".{name}'" in msg, msg
    assert 'evil.pkl' in msg
    assert not marker.exists()
    # The lower-level unpickler refuses the same way.
    with pytest.raises(UnsafePickleError):
        safe_pickle.SafeUnpickler(io.BytesIO(raw)).load()
    assert not marker.exists()


def test_malicious_payloads_are_live(tmp_path):
    """Control: the payloads above do run under a plain unpickler (so their refusal means something)."""
    marker = tmp_path / 'PWNED'
    raw, _ = _evil_cases(marker)['builtins.exec']
    pickle.loads(raw)
    assert marker.exists()


def test_module_src_would_run_under_upstream_semantics(upstream):
    """Control: upstream's hook executes module_src; the same bytes through stylefreq do not."""
    rec = upstream.record(tiny_net())
    raw = upstream.dumps(rec, 4)
    safe_pickle.SafeUnpickler(io.BytesIO(raw)).load()
    assert not upstream.marker.exists()
    exec(rec.args[0]['module_src'], {})
    assert upstream.marker.exists()


def test_malicious_global_inside_upstream_state(upstream):
    rec = upstream.record(tiny_net())
    rec.args[0]['state']['payload'] = _Reduced(exec, ('raise SystemExit',))
    with pytest.raises(UnsafePickleError, match='builtins.exec'):
        load_network_pkl(io.BytesIO(upstream.dumps(dict(G=rec), 4)))


def test_build_cannot_modify_shared_classes_or_functions():
    """BUILD can set attributes on whatever a pickle holds, classes and functions included."""
    raw = b"cstylefreq.kwargs\nEasyDict\n(N(dS'__getattr__'\nI1\nstb."
    with pytest.raises(UnsafePickleError, match='class EasyDict'):
        safe_pickle.SafeUnpickler(io.BytesIO(raw)).load()
    assert EasyDict.__dict__['__getattr__'] != 1
    with pytest.raises(UnsafePickleError):     # and the class the unpickler hands out is frozen
        safe_pickle.LoadedEasyDict.__getattr__ = None
    # An EasyDict whose '__setstate__' key would be found by BUILD through attribute access.
    raw = b"cstylefreq.kwargs\nEasyDict\n)\x81(S'__setstate__'\ncstylefreq.kwargs\nEasyDict\nu(S'x'\nI1\ndb."
    with pytest.raises(UnsafePickleError, match='EasyDict'):
        safe_pickle.SafeUnpickler(io.BytesIO(raw)).load()
    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    raw = b"ctorch._utils\n_rebuild_tensor_v2\n(N(dS'__defaults__'\nNstb."
    with pytest.raises(UnsupportedPickleError, match='function'):
        load_network_pkl(io.BytesIO(raw))
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults


def test_tensor_with_backward_hooks_is_refused():
    t = torch.zeros(2)
    raw = pickle.dumps(t, protocol=4)
    # Rebuild the same tensor pickle with a non-empty hooks dict.
    func, args = t.__reduce_ex__(4)
    hooked = _Reduced(func, args[:5] + (collections.OrderedDict(x=1),) + args[6:])
    with pytest.raises(UnsafePickleError, match='hooks'):
        safe_pickle.SafeUnpickler(io.BytesIO(pickle.dumps(hooked, protocol=4))).load()
    assert torch.equal(safe_pickle.SafeUnpickler(io.BytesIO(raw)).load(), t)


# ---------------------------------------------------------------------------------------------
# (c) stylefreq's own format.

def test_own_format_roundtrip_real_networks(tmp_path):
    G = tiny_generator(c_dim=3)
    D = tiny_discriminator(c_dim=3, freeze_layers=1)
    G_ema = tiny_generator(c_dim=3, seed=5).eval()
    opt = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.99))
    z, c = torch.randn(2, 8), torch.eye(3)[:2]
    for p in G.parameters():  # gives Adam real state without a (slow on CPU) backward pass
        p.grad = torch.randn_like(p)
    opt.step()
    pipe = augment.AugmentPipe(xflip=1, rotate90=1, xint=1, brightness=1, contrast=1)
    pipe.p.fill_(0.0625)
    data = dict(training_set_kwargs=EasyDict(class_name='training.dataset.ImageFolderDataset', path='/x.zip'),
                G=G, D=D, G_ema=G_ema, augment_pipe=pipe,
                progress=dict(cur_nimg=4000, cur_tick=3, batch_idx=12, ada_p=np.float64(0.125)),
                G_opt=opt.state_dict(), dtype=torch.float16, shape=torch.Size([2, 3]),
                misc=collections.OrderedDict(s={1, 2}, f=frozenset([3]), a=np.arange(4, dtype=np.uint8)))
    path = tmp_path / 'network-snapshot-000004.pkl'
    save_network_pkl(path, data)
    assert sorted(os.listdir(tmp_path)) == ['network-snapshot-000004.pkl']

    loaded = load_network_pkl(path)
    assert set(loaded) == set(data)
    for key in ('G', 'D', 'G_ema', 'augment_pipe'):
        net = loaded[key]
        assert type(net) is type(data[key])
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        assert_same_tensors(net, data[key])
        assert net._init_kwargs == data[key]._init_kwargs and net._init_args == data[key]._init_args
    assert torch.equal(loaded['G_ema'](z, c, noise_mode='const'), G_ema(z, c, noise_mode='const'))
    img = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded['D'](img, c), D.eval()(img, c))
    assert loaded['augment_pipe'].p.item() == 0.0625
    assert type(loaded['training_set_kwargs']) is EasyDict
    assert loaded['training_set_kwargs'].path == '/x.zip'
    assert loaded['progress'] == data['progress']
    assert loaded['dtype'] is torch.float16 and loaded['shape'] == torch.Size([2, 3])
    assert loaded['misc']['s'] == {1, 2} and np.array_equal(loaded['misc']['a'], np.arange(4))
    # Optimizer state resumes: same tensors, loadable into a fresh optimizer.
    st = loaded['G_opt']
    assert st['param_groups'] == data['G_opt']['param_groups']
    for k, v in data['G_opt']['state'].items():
        for name, t in v.items():
            assert torch.equal(st['state'][k][name], t)
    torch.optim.Adam(tiny_generator(c_dim=3).parameters()).load_state_dict(st)


@pytest.mark.parametrize('protocol', [2, 3, 4, 5])
def test_own_format_plain_data_any_protocol(tmp_path, protocol):
    data = dict(a=np.arange(5.0), s=np.float32(2), t=torch.arange(3), p=torch.nn.Parameter(torch.ones(2)),
                m={1}, b=b'xy', e=EasyDict(x=[1, (2, 3)]), d=torch.float64)
    save_network_pkl(tmp_path / 'p.pkl', data, protocol=protocol)
    loaded = load_network_pkl(tmp_path / 'p.pkl')
    assert np.array_equal(loaded['a'], data['a']) and loaded['s'] == 2 and type(loaded['s']) is np.float32
    assert torch.equal(loaded['t'], data['t']) and type(loaded['p']) is torch.nn.Parameter
    assert loaded['m'] == {1} and loaded['b'] == b'xy' and loaded['d'] is torch.float64
    assert type(loaded['e']) is EasyDict and loaded['e'].x == [1, (2, 3)]


def test_own_format_shared_network_stays_shared(tmp_path, allow_tests):
    net = tiny_net()
    save_network_pkl(tmp_path / 's.pkl', dict(G=net, G_ema=net))
    data = load_network_pkl(tmp_path / 's.pkl')
    assert data['G'] is data['G_ema'] and data['D'] is None


def test_own_format_small_modules_and_nested_wrapped(tmp_path, allow_tests):
    ref = tiny_net(frozen=False)
    save_network_pkl(tmp_path / 'a.pkl', dict(G=ref, nets=[ref, {'x': ref}]))
    data = load_network_pkl(str(tmp_path / 'a.pkl'))
    assert type(data['G']) is TinyNet and data['nets'][0] is data['G'] and data['nets'][1]['x'] is data['G']
    assert_same_tensors(data['G'], ref)
    assert 'block.scale' in dict(data['G'].named_parameters())


def test_save_is_atomic_when_dump_fails(tmp_path, allow_tests):
    path = tmp_path / 'snap.pkl'
    save_network_pkl(path, dict(G=tiny_net()))
    before = path.read_bytes()
    # Fails mid-dump: G is already written when the non-persistent module is met.
    with pytest.raises(ValueError, match='persistent_class'):
        save_network_pkl(path, dict(G=tiny_net(seed=1), D=NotPersistentNet()))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ['snap.pkl']


def test_save_is_atomic_when_interrupted(tmp_path, allow_tests, monkeypatch):
    path = tmp_path / 'snap.pkl'
    save_network_pkl(path, dict(G=tiny_net()))
    before = path.read_bytes()
    written = []

    class Interrupting(checkpoint._SnapshotPickler):
        def dump(self, obj):
            super().dump(obj)
            written.append(True)
            raise KeyboardInterrupt  # e.g. Ctrl-C after the data, before the rename

    monkeypatch.setattr(checkpoint, '_SnapshotPickler', Interrupting)
    with pytest.raises(KeyboardInterrupt):
        save_network_pkl(path, dict(G=tiny_net(seed=1)))
    assert written and path.read_bytes() == before
    assert os.listdir(tmp_path) == ['snap.pkl']

    monkeypatch.setattr(checkpoint, '_SnapshotPickler', Interrupting.__mro__[1])
    monkeypatch.setattr(os, 'fsync', lambda fd: (_ for _ in ()).throw(OSError(5, 'I/O error')))
    with pytest.raises(OSError, match='I/O error'):
        save_network_pkl(path, dict(G=tiny_net(seed=1)))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ['snap.pkl']


def test_save_gives_usual_permissions(tmp_path, allow_tests):
    save_network_pkl(tmp_path / 'p.pkl', dict(G=tiny_net()))
    mode = os.stat(tmp_path / 'p.pkl').st_mode & 0o777
    assert mode == 0o666 & ~files._umask()


@pytest.mark.parametrize('bad, match', [
    (torch.nn.Linear(2, 2), 'torch.nn.modules.linear.Linear.*persistent_class'),
    (NotPersistentNet(), 'NotPersistentNet.*persistent_class'),
    (lambda x: x, 'refuse'),
    (collections.defaultdict(list), 'defaultdict'),
    (types.SimpleNamespace(a=1), 'SimpleNamespace'),
    (UpstreamObject('X', '', 6, {}), 'UpstreamObject'),
])
def test_save_refuses_what_cannot_be_loaded(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        save_network_pkl(tmp_path / 'x.pkl', dict(G=None, bad=bad))
    assert os.listdir(tmp_path) == []


def _record_pickle(**overrides):
    record = dict(format='stylefreq.module', version=1, class_name=f'{TinyNet.__module__}.TinyNet',
                  init_args=(5, 4), init_kwargs=dict(block_kwargs={}), tensors=all_tensors(tiny_net(frozen=False)),
                  training=False)
    record.update(overrides)
    return pickle.dumps(dict(G=_Reduced(checkpoint._rebuild_module, (record,))), protocol=4)


def test_crafted_record_loads_when_valid(allow_tests):
    data = load_network_pkl(io.BytesIO(_record_pickle()))
    assert type(data['G']) is TinyNet


@pytest.mark.parametrize('class_name', [
    'os.system', 'builtins.eval', 'subprocess.Popen', 'torch.nn.Linear', 'sf_evil_module.Net',
    'stylefreq.kwargs.construct_class_by_name', 'stylefreq.checkpoint.save_network_pkl',
    'training.networks.torch.nn.Linear', 'stylefreq.persistence.copy.deepcopy',
])
def test_crafted_record_outside_allowed_classes_is_refused(tmp_path, monkeypatch, class_name):
    # A module whose import would leave a marker: refusal must come before any import.
    marker = tmp_path / 'IMPORTED'
    (tmp_path / 'sf_evil_module.py').write_text(marker_source(marker) + 'import torch\nNet = torch.nn.Linear\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UnsafePickleError, match='refusing to construct'):
        load_network_pkl(io.BytesIO(_record_pickle(class_name=class_name)))
    assert not marker.exists() and 'sf_evil_module' not in sys.modules


def test_crafted_record_with_nested_class_name_is_refused(allow_tests):
    raw = _record_pickle(init_kwargs=dict(block_kwargs={}, inner=dict(class_name='os.system')))
    with pytest.raises(UnsafePickleError, match="'os.system' is not in a module"):
        load_network_pkl(io.BytesIO(raw))


def test_crafted_record_with_wrong_shapes(allow_tests):
    tensors = all_tensors(tiny_net(frozen=False))
    tensors['block.fc.weight'] = torch.zeros(4, 3)
    with pytest.raises(RebuildError, match=r"'block\.fc\.weight'.*\[4, 3\].*\[4, 4\]"):
        load_network_pkl(io.BytesIO(_record_pickle(tensors=tensors)))


def test_crafted_record_with_bad_kwargs_or_version(allow_tests):
    with pytest.raises(RebuildError, match='cannot rebuild.*TinyNet'):
        load_network_pkl(io.BytesIO(_record_pickle(init_kwargs=dict(nonsense=1))))
    with pytest.raises(UnsupportedPickleError, match='version 99'):
        load_network_pkl(io.BytesIO(_record_pickle(version=99)))


def test_allow_module(monkeypatch):
    monkeypatch.setattr(sf_kwargs, '_ALLOWED_MODULES', {'stylefreq.ssd'})
    sf_kwargs.allow_module('myplugin.nets')
    assert sf_kwargs.allowed_modules() == {'stylefreq.ssd', 'myplugin.nets'}
    for bad in ('', 'my plugin', '.x'):
        with pytest.raises(ValueError):
            sf_kwargs.allow_module(bad)


def test_force_fp16(tmp_path):
    G, D = tiny_generator(), tiny_discriminator()
    save_network_pkl(tmp_path / 'n.pkl', dict(G=G, D=D, G_ema=G))
    data = load_network_pkl(tmp_path / 'n.pkl', force_fp16=True)
    for key in ('G', 'G_ema'):
        assert data[key]._init_kwargs['synthesis_kwargs'] == dict(channel_base=256, channel_max=32,
                                                                  num_fp16_res=4, conv_clamp=256)
        assert_same_tensors(data[key], G)
    assert data['D']._init_kwargs['num_fp16_res'] == 4 and data['D']._init_kwargs['conv_clamp'] == 256
    assert_same_tensors(data['D'], D)
    assert G._init_kwargs['synthesis_kwargs'] == dict(channel_base=256, channel_max=32)   # source untouched


# ---------------------------------------------------------------------------------------------
# (d) open_url and the download cache.

@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setattr(download, '_cache_dir', None)
    monkeypatch.setattr(download, 'RETRY_DELAY_S', 0.0)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'envcache'))
    return tmp_path / 'envcache'


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setattr(download, '_cache_dir', None)
    monkeypatch.delenv('DNNLIB_CACHE_DIR', raising=False)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    assert download.make_cache_dir_path('downloads') == str(tmp_path / 'home' / '.cache' / 'dnnlib' / 'downloads')
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'env'))
    assert download.make_cache_dir_path('a', 'b') == str(tmp_path / 'env' / 'a' / 'b')
    download.set_cache_dir(tmp_path / 'explicit')
    assert download.make_cache_dir_path() == str(tmp_path / 'explicit')
    download.set_cache_dir(None)
    monkeypatch.delenv('DNNLIB_CACHE_DIR')
    monkeypatch.delenv('HOME')
    monkeypatch.delenv('USERPROFILE', raising=False)
    assert download.make_cache_dir_path().endswith(os.path.join('.cache', 'dnnlib'))


def test_download_then_cache_hit_without_server(http_file_server, cache_env, capsys):
    payload = os.urandom(3 * 2**20 + 17)
    (http_file_server.root / 'net work.pkl').write_bytes(payload)
    url = http_file_server.url('net%20work.pkl')
    with open_url(url) as f:
        assert f.read() == payload
    err = capsys.readouterr().err
    assert 'MB' in err and '\r' in err and '3.0 / 3.0' in err
    expected = cache_env / 'downloads' / (hashlib.md5(url.encode()).hexdigest() + '_net_work.pkl')
    assert os.listdir(cache_env / 'downloads') == [expected.name]
    assert open_url(url, return_filename=True) == str(expected)
    assert http_file_server.requests == ['/net%20work.pkl']

    http_file_server.stop()
    with open_url(url, verbose=False) as f:
        assert f.read() == payload
    assert capsys.readouterr().err == ''


def test_set_cache_dir_and_explicit_cache_dir(http_file_server, cache_env, tmp_path):
    (http_file_server.root / 'a.bin').write_bytes(b'abc')
    url = http_file_server.url('a.bin')
    download.set_cache_dir(tmp_path / 'mine')
    assert open_url(url, verbose=False, return_filename=True).startswith(str(tmp_path / 'mine' / 'downloads'))
    other = open_url(url, cache_dir=tmp_path / 'other', verbose=False, return_filename=True)
    assert other.startswith(str(tmp_path / 'other'))
    assert not cache_env.exists()
    assert len(http_file_server.requests) == 2


def test_uncached_download(http_file_server, cache_env):
    (http_file_server.root / 'a.bin').write_bytes(b'abc')
    f = open_url(http_file_server.url('a.bin'), cache=False, verbose=False)
    assert f.read() == b'abc' and not cache_env.exists()
    with pytest.raises(ValueError):
        open_url(http_file_server.url('a.bin'), cache=False, return_filename=True)


def test_http_404_is_a_clear_error_and_not_retried(http_file_server, cache_env):
    url = http_file_server.url('missing.pkl')
    with pytest.raises(DownloadError) as e:
        open_url(url, num_attempts=3, verbose=False)
    assert url in str(e.value) and '404' in str(e.value)
    assert http_file_server.requests == ['/missing.pkl']
    assert os.listdir(cache_env / 'downloads') == []


def test_http_500_is_retried_then_reported(http_file_server, cache_env):
    url = http_file_server.url('status/503')
    with pytest.raises(DownloadError, match='503.*3 attempts'):
        open_url(url, num_attempts=3, verbose=False)
    assert len(http_file_server.requests) == 3


def test_truncated_download_leaves_no_file(http_file_server, cache_env):
    url = http_file_server.url('truncated')
    with pytest.raises(DownloadError, match='gave up after 2 attempts') as e:
        open_url(url, num_attempts=2, verbose=False)
    assert url in str(e.value)
    assert len(http_file_server.requests) == 2
    assert os.listdir(cache_env / 'downloads') == []


def test_interrupted_download_leaves_no_file(http_file_server, cache_env, monkeypatch):
    (http_file_server.root / 'big.bin').write_bytes(b'x' * 1000)
    real = download._fetch_once

    def interrupted(url, dst, verbose):
        real(url, dst, verbose)
        raise KeyboardInterrupt  # Ctrl-C with the data written but before the rename

    monkeypatch.setattr(download, '_fetch_once', interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_url(http_file_server.url('big.bin'), verbose=False)
    assert os.listdir(cache_env / 'downloads') == []
    monkeypatch.setattr(download, '_fetch_once', real)
    path = open_url(http_file_server.url('big.bin'), verbose=False, return_filename=True)
    assert os.path.getsize(path) == 1000 and os.stat(path).st_mode & 0o777 == 0o666 & ~files._umask()


def test_connection_refused(http_file_server, cache_env):
    url = http_file_server.url('x.pkl')
    http_file_server.stop()
    with pytest.raises(DownloadError) as e:
        open_url(url, num_attempts=2, verbose=False)
    assert url in str(e.value) and '2 attempts' in str(e.value)


def test_load_network_pkl_from_url(http_file_server, cache_env, allow_tests):
    ref = tiny_net()
    save_network_pkl(http_file_server.root / 'snap.pkl', dict(G=ref))
    data = load_network_pkl(http_file_server.url('snap.pkl'))
    assert_same_tensors(data['G'], ref)


def test_local_paths_and_file_urls(tmp_path):
    p = tmp_path / 'a b.bin'
    p.write_bytes(b'xyz')
    with open_url(str(p)) as f:
        assert f.read() == b'xyz'
    with open_url(p.as_uri()) as f:
        assert f.read() == b'xyz'
    assert open_url(p.as_uri(), return_filename=True) == str(p)
    missing = tmp_path / 'nope.pkl'
    with pytest.raises(FileNotFoundError, match='nope.pkl does not exist'):
        open_url(str(missing))
    with pytest.raises(FileNotFoundError, match='nope.pkl'):
        load_network_pkl(missing)
    with pytest.raises(FileNotFoundError, match='nope.pkl'):
        open_url(missing.as_uri())
    with pytest.raises(ValueError, match='unsupported URL scheme'):
        open_url('ftp://example.com/x.pkl')


# ---------------------------------------------------------------------------------------------
# (e) Files that are not network pickles.

@pytest.mark.parametrize('content', [b'this is a README, not a pickle\n', b'', b'\x80\x04\x95\x10'])
def test_not_a_pickle(tmp_path, content):
    path = write(tmp_path / 'notes.pkl', content)
    with pytest.raises(UnsupportedPickleError) as e:
        load_network_pkl(path)
    assert str(e.value).startswith(f'{path} is not a network pickle: ')
    assert '\n' not in str(e.value)


def test_torch_save_zip_is_not_a_network_pickle(tmp_path):
    path = tmp_path / 'weights.pt'
    torch.save({'w': torch.zeros(2)}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(UnsupportedPickleError, match='weights.pt is not a network pickle: it is a zip archive'):
        load_network_pkl(path)


@pytest.mark.parametrize('obj, what', [([1, 2], 'list'), (torch.zeros(1), 'Tensor'), ((None, None, None), 'tuple')])
def test_wrong_top_level_objects(tmp_path, obj, what):
    path = write(tmp_path / 'x.pkl', pickle.dumps(obj, protocol=4))
    with pytest.raises(UnsupportedPickleError, match=f'x.pkl is not a network pickle: it holds a {what}'):
        load_network_pkl(path)


def test_wrong_network_entries(tmp_path):
    path = write(tmp_path / 'x.pkl', pickle.dumps(dict(G='generator'), protocol=4))
    with pytest.raises(UnsupportedPickleError, match="'G' is a str"):
        load_network_pkl(path)
