"""Metrics: the registry and jsonl reports, FID/KID/PR/IS/PPL against closed forms and NumPy
references, the real-statistics cache, specdisc and fid_levels on controlled image sets, metrics
during a training run, calc_metrics.py on its snapshot, and a 2-process (gloo) run.

No real Inception/VGG weights are needed: `TinyDetector` below is a fixed random TorchScript
network with the published detectors' calling convention (uint8 or float NCHW of any size,
`return_features`, `no_output_bias` for class probabilities, `return_lpips`), served from a local
HTTP server through the download cache. Its features are a linear part (4x4 average pooling and a
random projection, so a constant shift of the pixels shifts them by a constant vector) and a
high-frequency energy part (zero-sum 3x3 filters, blind to constants).
"""

import json
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import scipy.linalg
import scipy.ndimage
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import builders

REPO = pathlib.Path(__file__).resolve().parents[1]

import calc_metrics
from metrics import metric_main, metric_utils, perceptual_path_length
from stylefreq import feature_stats, metric_streams, progress, specmetrics
from stylefreq.kwargs import EasyDict
from training import config, training_loop

RES = 32
NUM_IMAGES = 256
RESULT_FIELDS = {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl', 'timestamp'}
UPSTREAM_METRICS = ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'ppl2_wend', 'is50k', 'fid50k', 'kid50k', 'pr50k3',
                    'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend']


class TinyDetector(torch.nn.Module):
    def __init__(self, seed=0, num_classes=10):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        filters = torch.randn([8, 3, 3, 3], generator=g)
        self.register_buffer('filters', filters - filters.mean(dim=(1, 2, 3), keepdim=True))
        self.register_buffer('proj', torch.randn([16, 3 * 4 * 4], generator=g) / 8)
        self.register_buffer('head', torch.randn([num_classes, 24], generator=g))
        self.register_buffer('head_bias', torch.randn([num_classes], generator=g))

    def forward(self, img, return_features: bool = False, no_output_bias: bool = False,
                return_lpips: bool = False, resize_images: bool = True):
        x = img.to(torch.float32) / 128 - 1
        linear = F.adaptive_avg_pool2d(x, 4).flatten(1) @ self.proj.t()
        e = F.conv2d(x, self.filters)
        if return_lpips:
            return e.flatten(1) / float(e.shape[2] * e.shape[3]) ** 0.5
        feats = torch.cat([linear, e.square().mean(dim=(2, 3)).sqrt()], dim=1)
        if return_features:
            return feats
        logits = feats @ self.head.t()
        if not no_output_bias:
            logits = logits + self.head_bias
        return torch.softmax(logits, dim=1)


# ---------------------------------------------------------------------------------------------
# Fixtures


def write_folder(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        PIL.Image.fromarray(im).save(folder / f'{i:04d}.png')
    return str(folder)


@pytest.fixture(scope='module')
def image_sets(tmp_path_factory):
    """Folders of NUM_IMAGES 32x32 RGB images: smooth fields plus white noise in [20, 200] ('real'),
    the same + 20 ('shifted'), Gaussian-blurred with sigma 1 ('blurred'), and with noise added only
    at radial frequencies >= 1/4 cycles/pixel ('hfnoise'). Values are uint8 arrays too."""
    root = tmp_path_factory.mktemp('images')
    rs = np.random.RandomState(0)
    smooth = scipy.ndimage.gaussian_filter(rs.randn(NUM_IMAGES, RES, RES, 3), sigma=(0, 3, 3, 0), mode='wrap')
    real = np.clip(np.rint(smooth / smooth.std() * 25 + 110 + rs.randn(NUM_IMAGES, RES, RES, 3) * 12), 20, 200)
    blurred = scipy.ndimage.gaussian_filter(real, sigma=(0, 1, 1, 0), mode='reflect')
    f = np.fft.fftfreq(RES)
    high = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) >= 0.25
    noise = np.real(np.fft.ifft2(np.fft.fft2(rs.randn(NUM_IMAGES, 3, RES, RES)) * high)).transpose(0, 2, 3, 1)
    sets = dict(real=real, shifted=real + 20, blurred=blurred, hfnoise=real + noise / noise.std() * 15)
    out = EasyDict()
    for name, arr in sets.items():
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        out[name] = EasyDict(path=write_folder(root / name, arr), array=arr)
    return out


class single_thread:
    """torch on one thread inside the block: the runs compared below (training, calc_metrics.py in
    this process, two spawned processes of one thread each) then do bit-identical arithmetic."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def dataset_kwargs(path):
    return EasyDict(class_name='training.dataset.ImageFolderDataset', path=path)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / 'cache'
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(path))
    for var in metric_utils.DETECTOR_ENV.values():
        monkeypatch.delenv(var, raising=False)
    return path


@pytest.fixture
def detector(http_file_server, cache_dir):
    """The TinyDetector as TorchScript, served over HTTP; .urls is the detector_urls option."""
    metric_utils._detectors.clear()         # a reused port must not find another test's detector
    module = TinyDetector().eval()
    scripted = torch.jit.script(module)
    scripted.save(str(pathlib.Path(http_file_server.root) / 'tinydet.pt'))
    url = http_file_server.url('tinydet.pt')
    return EasyDict(module=module, url=url, urls=dict(inception=url, vgg16=url), server=http_file_server)


def features(module, images_nhwc, **kwargs):
    with torch.no_grad():
        return module(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2), **kwargs).double().numpy()


def calc(metric, real, gen, detector, **kwargs):
    return metric_main.calc_metric(metric, dataset_kwargs=dataset_kwargs(real), gen_dataset_kwargs=dataset_kwargs(gen),
                                   detector_urls=detector.urls, **kwargs)


def reference_fid(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = (a - mu_a).T @ (a - mu_a) / len(a)
    cov_b = (b - mu_b).T @ (b - mu_b) / len(b)
    root = np.real(scipy.linalg.sqrtm(cov_a @ cov_b))
    return float(np.square(mu_a - mu_b).sum() + np.trace(cov_a + cov_b - 2 * root))


# ---------------------------------------------------------------------------------------------
# Registry and reports


def test_registry_names_and_errors():
    valid = metric_main.list_valid_metrics()
    for name in UPSTREAM_METRICS + ['specdisc', 'fid_levels']:
        assert name in valid and metric_main.is_valid_metric(name)
    for name in ['specdisc1k', 'specdisc50k', 'fid_levels10k']:
        assert metric_main.is_valid_metric(name)
    for name in ['fid', 'specdisc0k', 'specdisc1.5k', 'fid50k_full ', '', None]:
        assert not metric_main.is_valid_metric(name)
    with pytest.raises(ValueError, match='unknown metric .nope.; valid: fid50k_full, .*specdisc<N>k'):
        metric_main.calc_metric('nope')
    with pytest.raises(ValueError, match='unknown metric'):
        metric_main.report_metric(EasyDict(metric='nope', results={}), run_dir=None)
    # train.py validates --metrics against the same registry.
    with pytest.raises(config.UserError, match="unknown metric 'fid'; valid: fid50k_full"):
        config.training_options(data='builtin:blobs16', metrics=['fid'])
    assert config.training_options(data='builtin:blobs16', metrics=['specdisc2k'])[1].metrics == ['specdisc2k']


def test_plugin_metric_and_jsonl_fields(tmp_path, capsys):
    @metric_main.register_metric
    def plugin_metric_for_test(opts):
        return dict(plugin_a=1.5, plugin_b=np.float32(2))
    try:
        result = metric_main.calc_metric('plugin_metric_for_test', dataset_kwargs={})
        assert result.results == dict(plugin_a=1.5, plugin_b=2.0) and result.metric == 'plugin_metric_for_test'
        assert result.num_gpus == 1 and result.total_time >= 0 and isinstance(result.total_time_str, str)
        run_dir = tmp_path / 'run'
        run_dir.mkdir()
        for _ in range(2):
            metric_main.report_metric(result, run_dir=str(run_dir),
                                      snapshot_pkl=str(run_dir / 'network-snapshot-000004.pkl'))
        lines = (run_dir / 'metric-plugin_metric_for_test.jsonl').read_text().splitlines()
        assert len(lines) == 2
        rec = json.loads(lines[0])
        assert set(rec) == RESULT_FIELDS
        assert rec['snapshot_pkl'] == 'network-snapshot-000004.pkl' and rec['results']['plugin_b'] == 2.0
        assert json.loads(capsys.readouterr().out.splitlines()[0]) == rec
    finally:
        metric_main._metric_dict.pop('plugin_metric_for_test')


# ---------------------------------------------------------------------------------------------
# FID, KID, PR, IS


def test_fid_identical_and_shifted_sets(image_sets, detector, cache_dir):
    real, shifted = image_sets.real, image_sets.shifted
    assert abs(calc('fid50k_full', real.path, real.path, detector).results.fid50k_full) < 1e-6

    fid = calc('fid50k_full', real.path, shifted.path, detector).results.fid50k_full
    fa, fb = features(detector.module, real.array, return_features=True), \
        features(detector.module, shifted.array, return_features=True)
    delta = fb - fa                      # the linear features move by one constant vector, the rest not at all
    assert np.allclose(delta, delta[0], atol=1e-4) and np.abs(delta[0, :16]).min() > 0
    assert fid == pytest.approx(np.square(delta[0]).sum(), rel=1e-3)       # closed form |delta|^2
    assert fid == pytest.approx(reference_fid(fb, fa), rel=1e-6)
    # The detector was downloaded once over HTTP into the cache, then reused.
    assert detector.server.requests == ['/tinydet.pt']
    assert len(list((cache_dir / 'downloads').glob('*_tinydet.pt'))) == 1


def test_kid_pr_is_against_numpy(image_sets, detector):
    real, shifted = image_sets.real, image_sets.shifted
    fa = features(detector.module, real.array, return_features=True)
    fb = features(detector.module, shifted.array, return_features=True)

    def reference_kid(gen, ref):     # m = n: every subset is a permutation, so the estimate is exact
        d, m = gen.shape[1], len(gen)
        k = lambda x, y: (x @ y.T / d + 1) ** 3
        kxx, kyy, kxy = k(gen, gen), k(ref, ref), k(gen, ref)
        return ((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m ** 2)

    kids = [calc('kid50k_full', real.path, gen.path, detector).results.kid50k_full for gen in (real, shifted)]
    assert kids == pytest.approx([reference_kid(fa, fa), reference_kid(fb, fa)], rel=1e-6, abs=1e-9)
    assert abs(kids[0]) < 1e-2 and kids[1] > 0.05

    def reference_pr(ref, gen, k=3):
        def inside(probes, manifold):
            dm = np.sqrt(((manifold[:, None] - manifold[None]) ** 2).sum(-1))
            radii = np.sort(dm, axis=1)[:, k]
            dp = np.sqrt(((probes[:, None] - manifold[None]) ** 2).sum(-1))
            return (dp <= radii[None]).any(axis=1).mean()
        return inside(gen, ref), inside(ref, gen)

    res = calc('pr50k3_full', real.path, real.path, detector).results
    assert (res.pr50k3_full_precision, res.pr50k3_full_recall) == (1.0, 1.0)
    res = calc('pr50k3_full', real.path, image_sets.blurred.path, detector).results
    ref = reference_pr(fa, features(detector.module, image_sets.blurred.array, return_features=True))
    assert (res.pr50k3_full_precision, res.pr50k3_full_recall) == pytest.approx(ref, abs=1.5 / NUM_IMAGES)

    res = calc('is50k', real.path, image_sets.hfnoise.path, detector).results
    probs = features(detector.module, image_sets.hfnoise.array, no_output_bias=True)
    scores = []
    for i in range(10):
        part = probs[i * NUM_IMAGES // 10:(i + 1) * NUM_IMAGES // 10]
        py = part.mean(0, keepdims=True)
        scores.append(np.exp((part * (np.log(part) - np.log(py))).sum(1).mean()))
    assert (res.is50k_mean, res.is50k_std) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-5)
    assert 1.0 <= res.is50k_mean <= 10.0


def test_real_statistics_cache(image_sets, detector, cache_dir, monkeypatch, capsys):
    real, blurred = image_sets.real, image_sets.blurred
    calls = []
    original = metric_streams.accumulate_stream
    monkeypatch.setattr(metric_streams, 'accumulate_stream', lambda opts, stream, *a, **k:
                        calls.append(stream.tag) or original(opts, stream, *a, **k))
    monitor = progress.ProgressMonitor(verbose=True)
    first = calc('fid50k_full', real.path, blurred.path, detector, progress=monitor).results.fid50k_full
    assert calls == ['dataset features', 'generator features']
    out = capsys.readouterr().out
    assert f'dataset features     {NUM_IMAGES}/{NUM_IMAGES} items' in out           # the progress line
    files = list((cache_dir / 'gan-metrics').glob('real-tinydet-*.npz'))
    assert len(files) == 1

    calls.clear()
    assert calc('fid50k_full', real.path, blurred.path, detector).results.fid50k_full == first
    assert calls == ['generator features']                                   # reals from the cache
    # Other options (xflip on, legacy fid50k keeps it) are another cache entry.
    calc('fid50k', real.path, blurred.path, detector)
    assert len(list((cache_dir / 'gan-metrics').glob('real-tinydet-*.npz'))) == 2
    # cache=False neither reads nor writes.
    calls.clear()
    calc('fid50k_full', real.path, blurred.path, detector, cache=False)
    assert calls == ['dataset features', 'generator features']

    # A cache file is never unpickled: a pickle in its place is ignored (recomputed and overwritten).
    class Evil:
        def __reduce__(self):
            return (os.system, ('touch ' + str(cache_dir / 'pwned'),))
    files[0].write_bytes(pickle.dumps(dict(format=feature_stats.STATS_FORMAT, stats=Evil())))
    calls.clear()
    assert calc('fid50k_full', real.path, blurred.path, detector).results.fid50k_full == first
    assert calls == ['dataset features', 'generator features'] and not (cache_dir / 'pwned').exists()
    assert feature_stats.load_stats_file(str(files[0])) is not None


def test_missing_detector_is_one_sentence(image_sets, http_file_server, cache_dir):
    url = http_file_server.url('nothing-here.pt')
    with pytest.raises(metric_streams.MetricError, match=r'cannot load the feature detector .*nothing-here.pt.*HTTP 404'
                                                         r'.*--inception-url'):
        metric_main.calc_metric('fid50k_full', dataset_kwargs=dataset_kwargs(image_sets.real.path),
                                gen_dataset_kwargs=dataset_kwargs(image_sets.real.path),
                                detector_urls=dict(inception=url))


# ---------------------------------------------------------------------------------------------
# PPL (API level: the registered PPL metrics draw 50k samples)


class LinearG(torch.nn.Module):
    """A generator whose image is linear in w (optionally scaled), with StyleGAN2's interface."""

    def __init__(self, scale=1.0, constant=False):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.z_dim, self.w_dim, self.c_dim, self.num_ws = 8, 8, 0, 2
        self.img_resolution, self.img_channels = 16, 3
        self.register_buffer('map', torch.randn([8, 8], generator=g))
        self.register_buffer('synth', torch.randn([8, 3 * 16 * 16], generator=g) * 0.2)
        self.scale, self.constant = scale, constant
        self.mapping = lambda z, c: (z @ self.map)[:, None].repeat(1, self.num_ws, 1)

    def synthesis(self, ws, noise_mode='random', force_fp32=False):
        w = ws[:, 0] * (0 if self.constant else 1)
        return ((w @ self.synth) * self.scale).reshape(-1, 3, 16, 16)

    def forward(self, z, c, **kwargs):
        return self.synthesis(self.mapping(z, c), **kwargs)


def test_ppl(detector, image_sets):
    def ppl(G, space='w', sampling='end', crop=False):
        opts = metric_streams.MetricOptions(G=G, dataset_kwargs=dataset_kwargs(image_sets.real.path),
                                          detector_urls=detector.urls)
        return perceptual_path_length.compute_ppl(opts, num_samples=64, epsilon=1e-4, space=space, sampling=sampling,
                                                  crop=crop, batch_size=8)
    assert ppl(LinearG(constant=True)) == 0
    base = ppl(LinearG())
    assert base > 0 and ppl(LinearG()) == base                               # seeded: reproducible
    assert ppl(LinearG(scale=2.0)) == pytest.approx(4 * base, rel=1e-2)       # LPIPS^2 / eps^2 scales with 2^2
    for space in 'zw':
        for sampling in ('full', 'end'):
            assert np.isfinite(ppl(LinearG(), space, sampling, crop=True))
    with pytest.raises(metric_streams.MetricError, match='needs a generator'):
        metric_main.calc_metric('ppl2_wend', dataset_kwargs=dataset_kwargs(image_sets.real.path),
                                gen_dataset_kwargs=dataset_kwargs(image_sets.real.path), detector_urls=detector.urls)


# ---------------------------------------------------------------------------------------------
# specdisc and fid_levels


def reference_specdisc(real, gen):
    """The README definition in NumPy, independently of stylefreq.spectral."""
    def mean_spectrum(images):
        g = (images.astype(np.float64) / 127.5 - 1).mean(axis=3)
        g = g - g.mean(axis=(1, 2), keepdims=True)
        g = g * np.outer(np.hanning(RES), np.hanning(RES))
        return np.fft.fftshift(np.abs(np.fft.fft2(g)) ** 2, axes=(1, 2)).mean(0) / RES ** 2
    pr, pg = mean_spectrum(real), mean_spectrum(gen)
    u = np.arange(RES) - RES // 2
    k = np.floor(np.sqrt(u[:, None] ** 2 + u[None, :] ** 2)).astype(int)
    prof = lambda p: 10 * np.log10(np.bincount(k.ravel(), p.ravel()) / np.bincount(k.ravel()) + 1e-20)
    d = np.abs(prof(pg) - prof(pr))
    f = np.arange(len(d)) / RES
    out = dict(all=d[f > 0].mean(), low=d[(f > 0) & (f < 1 / 8)].mean(), mid=d[(f >= 1 / 8) & (f < 1 / 4)].mean(),
               high=d[f >= 1 / 4].mean())
    out['leakage'] = 0.5 * np.abs(pr / pr.sum() - pg / pg.sum()).sum()
    return out


def test_specdisc(image_sets, cache_dir, tmp_path, monkeypatch):
    real = image_sets.real
    same = calc('specdisc1k', real.path, real.path, EasyDict(urls={})).results
    assert set(same) == {f'specdisc1k_{k}' for k in ('all', 'low', 'mid', 'high', 'leakage')}
    assert all(abs(v) < 1e-9 for v in same.values())

    for name in ('blurred', 'hfnoise'):
        result = calc('specdisc1k', real.path, image_sets[name].path, EasyDict(urls={}))
        res = {k.split('_')[1]: v for k, v in result.results.items()}
        assert res == pytest.approx(reference_specdisc(real.array, image_sets[name].array), rel=1e-4, abs=1e-6)
        # The discrepancy sits in the high band.
        assert res['high'] > 4 * res['mid'] and res['high'] > 4 * res['low'] and res['high'] > 3, (name, res)
        assert res['leakage'] > 0.05

    # The figure goes beside metric-specdisc1k.jsonl, or into the cwd without a run directory.
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    metric_main.report_metric(result, run_dir=str(run_dir), snapshot_pkl=str(run_dir / 'network-snapshot-000012.pkl'))
    assert json.loads((run_dir / 'metric-specdisc1k.jsonl').read_text())['results'] == result.results
    with PIL.Image.open(run_dir / 'metric-specdisc1k-network-snapshot-000012.png') as im:
        assert im.format == 'PNG' and im.width > 600 and im.height > 400
        assert len(np.unique(np.asarray(im.convert('RGB')).reshape(-1, 3), axis=0)) > 50
    monkeypatch.chdir(tmp_path)
    metric_main.report_metric(result)
    with PIL.Image.open(tmp_path / 'metric-specdisc1k.png') as im:
        im.verify()
    # Spectra of the reals are cached.
    assert len(list((cache_dir / 'gan-metrics').glob('real-power-spectrum-*.npz'))) == 1


def test_gaussian_highpass_definition():
    k = specmetrics.gaussian_kernel(2.0)
    assert k.shape == (51,) and float(k.sum()) == pytest.approx(1.0) and int(k.argmax()) == 25
    assert float(k[25 + 2] / k[25]) == pytest.approx(np.exp(-0.5))
    x = torch.full([1, 3, 64, 64], 0.5, dtype=torch.float64)
    h = specmetrics.gaussian_highpass(x, 1.0)
    assert float(h[..., 10:-10, 10:-10].abs().max()) < 1e-12              # constant interior: nothing passes
    assert float(h[0, 0, 0, 0]) > 0.1                                      # zero padding: borders pass
    assert torch.equal(specmetrics.gaussian_highpass(x, 0), x)
    # The banded-matrix path equals the 51-tap convolution.
    y = torch.rand([2, 3, 20, 20], dtype=torch.float64)
    kk = specmetrics.gaussian_kernel(1.6)
    ref = F.conv2d(F.conv2d(y.reshape(6, 1, 20, 20), kk.reshape(1, 1, 51, 1), padding=(25, 0)),
                   kk.reshape(1, 1, 1, 51), padding=(0, 25)).reshape(2, 3, 20, 20)
    assert torch.allclose(specmetrics.gaussian_highpass(y, 1.6), y - ref, atol=1e-12)
    assert [specmetrics.fid_levels_key('fid_levels', s) for s in specmetrics.FID_LEVELS_SIGMAS] == [
        f'fid_levels_fc{v}' for v in ('0.0000', '0.0199', '0.0398', '0.0597', '0.0796', '0.0995', '0.1194', '0.1393',
                                      '0.1592')]


def test_fid_levels_rise_on_blurred_copy(image_sets, detector, tmp_path):
    real = image_sets.real
    result = calc('fid_levels1k', real.path, image_sets.blurred.path, detector)
    keys = [specmetrics.fid_levels_key('fid_levels1k', s) for s in specmetrics.FID_LEVELS_SIGMAS]
    assert list(result.results) == keys
    fids = np.array([result.results[k] for k in keys])
    # Level 0 is the plain FID of the same images.
    plain = calc('fid50k_full', real.path, image_sets.blurred.path, detector).results.fid50k_full
    assert fids[0] == pytest.approx(plain, rel=1e-6)
    assert fids[-1] > 2 * fids[0] and np.corrcoef(np.arange(len(fids)), fids)[0, 1] > 0.8, fids
    metric_main.report_metric(result, run_dir=str(tmp_path))
    with PIL.Image.open(tmp_path / 'metric-fid_levels1k.png') as im:
        assert im.format == 'PNG' and im.width >= 400


# ---------------------------------------------------------------------------------------------
# During training, calc_metrics.py on the snapshot, and two processes


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
    """A tiny training run (one iteration, one snapshot) with --metrics=specdisc1k, set up as train.py does."""
    run_dir = tmp_path_factory.mktemp('run') / '00000-blobs16'
    run_dir.mkdir()
    _desc, args = config.training_options(data='builtin:blobs16', cbase=256, cmax=16, map=2, batch=8,
                                                   workers=0, aug='noaug', metrics=['specdisc1k'])
    args.G_kwargs.z_dim = args.G_kwargs.w_dim = 32
    args.run_dir = str(run_dir)
    args.total_kimg = 0.008                 # one iteration: one tick, one snapshot, one evaluation
    args.kimg_per_tick = 0.008
    args.image_snapshot_ticks = None
    args.network_snapshot_ticks = 1
    with open(run_dir / 'training_options.json', 'w') as f:
        json.dump(args, f)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('DNNLIB_CACHE_DIR', str(run_dir.parent / 'cache'))
        # A 4x2 sample grid instead of 32x32 (1024 renders at 16 px): not what this test is about.
        mp.setattr(training_loop, 'setup_snapshot_image_grid', builders.small_grid)
        with single_thread():
            training_loop.training_loop(rank=0, device=torch.device('cpu'), **args)   # CPU on any machine
    return run_dir


def test_specdisc_during_training(trained_run):
    lines = (trained_run / 'metric-specdisc1k.jsonl').read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert set(rec) == RESULT_FIELDS and rec['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    assert rec['num_gpus'] == 1 and all(np.isfinite(v) for v in rec['results'].values())
    assert rec['results']['specdisc1k_high'] > 0
    with PIL.Image.open(trained_run / 'metric-specdisc1k-network-snapshot-000000.png') as im:
        im.verify()
    stats = [json.loads(line) for line in (trained_run / 'stats.jsonl').read_text().splitlines()]
    assert stats[-1]['timestamp'] > 0


_one_process = {}


def one_process_results(trained_run, detector_url):
    """calc_metrics.py --metrics=specdisc1k,fid_levels1k on the snapshot, in this process (once per
    module): the records it printed."""
    if 'records' not in _one_process:
        pkl = str(trained_run / 'network-snapshot-000000.pkl')
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.cuda, 'is_available', lambda: False)      # the CPU, as in training and 2 processes
            with single_thread():
                    res = CliRunner().invoke(calc_metrics.calc_metrics, ['--metrics=specdisc1k,fid_levels1k',
                                                                     f'--network={pkl}',
                                                                     f'--inception-url={detector_url}'],
                                         catch_exceptions=False)
        assert res.exit_code == 0, res.output
        _one_process['output'] = res.output
        _one_process['records'] = [json.loads(line) for line in res.output.splitlines() if line.startswith('{')]
    return _one_process['records']


def test_calc_metrics_cli(trained_run, image_sets, detector, tmp_path):
    pkl = str(trained_run / 'network-snapshot-000000.pkl')
    trained = json.loads((trained_run / 'metric-specdisc1k.jsonl').read_text().splitlines()[0])['results']
    records = one_process_results(trained_run, detector.url)
    assert 'generator spectra    1000/1000 items' in _one_process['output']          # progress lines
    assert 'generator levels     1000/1000 items' in _one_process['output']
    assert [r['metric'] for r in records] == ['specdisc1k', 'fid_levels1k']
    lines = (trained_run / 'metric-specdisc1k.jsonl').read_text().splitlines()
    assert len(lines) >= 2 and json.loads(lines[1]) == records[0]    # a run directory: appended there
    assert records[0]['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    assert records[0]['results'] == pytest.approx(trained, rel=1e-9)  # the same seeded images as in training
    assert len(records[1]['results']) == 9
    assert (trained_run / 'metric-fid_levels1k-network-snapshot-000000.png').is_file()

    # Unknown names list the valid ones; bad combinations are one sentence.
    runner = CliRunner()
    res = runner.invoke(calc_metrics.calc_metrics, ['--metrics=fid50k_full,fid', f'--network={pkl}'])
    assert res.exit_code == 2 and "unknown metric fid; valid: fid50k_full, kid50k_full" in res.output
    assert 'specdisc<N>k' in res.output and 'Traceback' not in res.output
    res = runner.invoke(calc_metrics.calc_metrics, ['--metrics=ppl2_wend', f'--images={image_sets.real.path}',
                                                    f'--data={image_sets.real.path}'])
    assert res.exit_code == 2 and 'needs a network' in res.output
    res = runner.invoke(calc_metrics.calc_metrics, ['--metrics=specdisc', f'--network={tmp_path / "missing.pkl"}'])
    assert res.exit_code == 2 and 'missing.pkl' in res.output and 'Traceback' not in res.output

    # --images with --data and a detector flag: FID of a folder against a dataset, printed only.
    res = runner.invoke(calc_metrics.calc_metrics, ['--metrics=fid50k_full', f'--images={image_sets.real.path}',
                                                    f'--data={image_sets.real.path}', f'--inception-url={detector.url}',
                                                    '--verbose=false'], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output.strip().splitlines()[-1])
    assert set(rec) == RESULT_FIELDS and abs(rec['results']['fid50k_full']) < 1e-6


def test_two_processes_match_one(trained_run, detector, tmp_path):
    """calc_metrics.py --gpus=2 (two gloo processes on the CPU, each computing the real statistics
    afresh) gives one process's results: the same generated images, reduced in the same order."""
    pkl = trained_run / 'network-snapshot-000000.pkl'
    one = {k: v for r in one_process_results(trained_run, detector.url) for k, v in r['results'].items()}
    proc = subprocess.run([sys.executable, str(REPO / 'calc_metrics.py'), '--metrics=specdisc1k,fid_levels1k',
                           f'--network={pkl}', '--gpus=2', '--verbose=false', f'--inception-url={detector.url}'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO), DNNLIB_CACHE_DIR=str(tmp_path / 'cache'),
                                   CUDA_VISIBLE_DEVICES=''))        # gloo on the CPU on any machine
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
    assert [(r['metric'], r['num_gpus']) for r in recs] == [('specdisc1k', 2), ('fid_levels1k', 2)]
    two = {k: v for r in recs for k, v in r['results'].items()}
    assert two == pytest.approx(one, rel=1e-12, abs=1e-12)


def test_calc_metrics_on_upstream_pickle(tmp_path):
    """An upstream-format pickle (module_src that would leave a marker if executed; built with
    tests/test_training.py's writer): its training_set_kwargs name a missing dataset, so --data
    is needed; the metric runs, nothing from the pickle executes, results go to stdout only."""
    helpers = pytest.importorskip('test_training')
    _desc, args = helpers.tiny_args(tmp_path / 'unused', cmax=16)
    pkl, marker = tmp_path / 'upstream.pkl', tmp_path / 'MODULE_SRC_EXECUTED'
    helpers.upstream_pickle(pkl, args, marker)
    runner = CliRunner()
    res = runner.invoke(calc_metrics.calc_metrics, ['--metrics=specdisc1k', f'--network={pkl}'])
    assert res.exit_code == 2 and '/datasets/ffhq16.zip' in res.output and '--data' in res.output
    with pytest.MonkeyPatch.context() as mp, single_thread():
        mp.chdir(tmp_path)
        mp.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
        res = runner.invoke(calc_metrics.calc_metrics, ['--metrics=specdisc1k', f'--network={pkl}',
                                                        '--data=builtin:blobs16', '--mirror=1'], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = json.loads([line for line in res.output.splitlines() if line.startswith('{')][0])
    assert rec['snapshot_pkl'] == str(pkl) and np.isfinite(rec['results']['specdisc1k_all'])
    assert not marker.exists() and not (tmp_path / 'metric-specdisc1k.jsonl').exists()
    assert (tmp_path / 'metric-specdisc1k-upstream.png').is_file()      # no run directory: the cwd


# ---------------------------------------------------------------------------------------------
# calc_metrics.py on bad input: one sentence, no traceback


def one_error_line(output):
    assert 'Traceback' not in output, output
    errors = [line for line in output.splitlines() if line.startswith('Error: ')]
    assert len(errors) == 1, output
    return errors[0]


def test_calc_metrics_builds_only_registered_dataset_classes(trained_run, tmp_path):
    """Without --data the dataset comes from the pickle's training_set_kwargs: a class name is
    looked up in the registry of dataset classes, never imported or walked to, and nothing else
    is built (a network class would allocate whatever its recorded sizes say)."""
    from stylefreq import checkpoint
    data = checkpoint.load_network_pkl(str(trained_run / 'network-snapshot-000000.pkl'), verbose=False)
    marker = tmp_path / 'MARKER'
    cases = {
        'system': (dict(class_name='os.system', command=f'touch {marker}'), "dataset class 'os.system'"),
        'walk': (dict(class_name='training.dataset.os.system', command=f'touch {marker}'),
                 "dataset class 'training.dataset.os.system'"),
        'network': (dict(class_name='training.networks.FullyConnectedLayer', in_features=23170, out_features=23170),
                    "'training.networks.FullyConnectedLayer' in its training_set_kwargs, which is not a registered "
                    "dataset class"),
        'noname': (dict(path='builtin:blobs16'), 'dataset class None'),
        'options': (dict(class_name='training.dataset.ImageFolderDataset', path='builtin:blobs16', shell='rm -rf'),
                    'its options do not suit ImageFolderDataset'),
        'badpath': (dict(class_name='training.dataset.ImageFolderDataset', path=['x']),
                    "Dataset path ['x'] is not a text path"),
        'empty': ({}, 'does not record its training data'),
    }
    runner = CliRunner()
    for name, (recorded, message) in cases.items():
        pkl = tmp_path / f'{name}.pkl'
        checkpoint.save_network_pkl(pkl, dict(data, training_set_kwargs=recorded))
        res = runner.invoke(calc_metrics.calc_metrics, ['--metrics=specdisc1k', f'--network={pkl}'])
        line = one_error_line(res.output)
        assert res.exit_code == 2 and str(pkl) in line and message in line and '--data' in line, (name, line)
    assert not marker.exists()


def test_calc_metrics_bad_input_is_one_sentence(trained_run, tmp_path, http_file_server):
    pkl = str(trained_run / 'network-snapshot-000000.pkl')
    images = np.random.RandomState(0).randint(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    folder = pathlib.Path(write_folder(tmp_path / 'late', images))
    (folder / '0002.png').write_bytes(b'not an image')        # the dataset opens; reading it fails later
    runner = CliRunner()
    cases = [
        ([f'--network={pkl}', f'--data={folder}'], 1, f"'{folder / '0002.png'}' is not a readable image"),
        ([f'--images={folder}', '--data=builtin:blobs16'], 1, f"'{folder / '0002.png'}' is not a readable image"),
        (['--network=ftp://example.org/net.pkl'], 2, "unsupported URL scheme 'ftp'"),
        ([f'--network={http_file_server.url("status/404")}'], 2, 'HTTP 404'),
        ([f'--network={tmp_path}'], 2, 'is a directory'),
        ([f'--network={pkl}', '--data=builtin:blobs32'], 2, 'resolution=16 was asked for'),
        ([f'--network={pkl}', '--metrics=specdisc1k,'], 2, 'unknown metric (empty); valid:'),
        ([f'--network={pkl}', '--gpus=0'], 2, '0 processes cannot compute anything'),
    ]
    with pytest.MonkeyPatch.context() as mp, single_thread():
        mp.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
        mp.setattr(torch.cuda, 'is_available', lambda: False)
        for args, code, message in cases:
            if not any(a.startswith('--metrics') for a in args):
                args = ['--metrics=specdisc1k', *args]
            res = runner.invoke(calc_metrics.calc_metrics, args)
            line = one_error_line(res.output)
            assert res.exit_code == code and message in line, (args, res.output)


def test_calc_metrics_bad_image_in_one_of_two_processes(trained_run, tmp_path):
    """A corrupt image read by one spawned process: the others then fail in their collectives, and
    the launching process still prints the one sentence that explains it."""
    images = np.random.RandomState(0).randint(0, 256, size=(70, 16, 16, 3), dtype=np.uint8)
    folder = pathlib.Path(write_folder(tmp_path / 'late', images))
    (folder / '0066.png').write_bytes(b'not an image')        # global batch 1: the second process reads it
    proc = subprocess.run([sys.executable, str(REPO / 'calc_metrics.py'), '--metrics=specdisc1k',
                           f'--network={trained_run / "network-snapshot-000000.pkl"}', f'--data={folder}', '--gpus=2',
                           '--verbose=false'], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO), DNNLIB_CACHE_DIR=str(tmp_path / 'cache'),
                                   CUDA_VISIBLE_DEVICES=''))
    assert proc.returncode == 1
    line = one_error_line(proc.stdout + proc.stderr)
    assert f"'{folder / '0066.png'}' is not a readable image" in line, line


# ---------------------------------------------------------------------------------------------
# The metrics a patched upstream checkout registers (stylefreq.upstream) are the same computations.

def test_upstream_adapters_give_the_same_numbers(image_sets, detector, cache_dir, monkeypatch):
    """stylefreq.upstream's specdisc and fid_levels, called with an upstream-style MetricOptions
    (the attributes upstream's has), equal stylefreq's own registry on the same generator and data."""
    import types
    from stylefreq import upstream
    from training import networks
    torch.manual_seed(0)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=RES, img_channels=3,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=128, channel_max=16))
    real = dataset_kwargs(image_sets.real.path)
    upstream_opts = types.SimpleNamespace(G=G, G_kwargs={}, dataset_kwargs=real, num_gpus=1, rank=0,
                                          device=torch.device('cpu'), progress=types.SimpleNamespace(verbose=False),
                                          cache=True)
    fake_metric_utils = types.SimpleNamespace(
        get_feature_detector=lambda url, **kw: metric_utils.get_feature_detector(detector.url))
    ours = metric_main.calc_metric('specdisc1k', G=G, dataset_kwargs=real).results
    theirs = {fn.__name__: fn for fn in upstream.metric_functions(fake_metric_utils)}
    assert theirs['specdisc1k'](upstream_opts) == dict(ours)
    ours = metric_main.calc_metric('fid_levels1k', G=G, dataset_kwargs=real, detector_urls=detector.urls).results
    monkeypatch.setenv('STYLEFREQ_INCEPTION_URL', detector.url)       # how the checkout's adapter is pointed
    assert theirs['fid_levels1k'](upstream_opts) == dict(ours)
