"""The spectral monitor (training/spectral_monitor.py): its numbers are specdisc's, it sees what a
blurring generator gets wrong, it reduces over processes, and a training run with it writes the
statistics every tick plus the spectrum and curve figures, continued by a resumed run."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch

import builders
from metrics import metric_main
from stylefreq import distributed, specmetrics
from training import config, dataset, training_loop
from training.spectral_monitor import STAT_NAMES, SpectralMonitor, read_curve, real_mean_spectrum

DATA = 'builtin:blobs16'        # 512 images: fewer than any max_real below, so "all reals" on both sides


def reals_and_kwargs():
    kwargs = dict(class_name='training.dataset.ImageFolderDataset', path=DATA, use_labels=False, xflip=False)
    ds = dataset.ImageFolderDataset(**{k: v for k, v in kwargs.items() if k != 'class_name'})
    images = np.stack([ds[i][0] for i in range(len(ds))])          # uint8 [N, C, H, W]
    return torch.from_numpy(images), kwargs


def blurred(images_uint8):
    """A 5x5 binomial blur per channel, as uint8 (what a generator without fine detail produces)."""
    x = images_uint8.to(torch.float32)
    k1 = torch.tensor([1., 4., 6., 4., 1.]) / 16
    k = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 5, 5)
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode='reflect'), k, groups=x.shape[1])
    return y.round().clamp(0, 255).to(torch.uint8)


def as_float(images_uint8):
    return images_uint8.to(torch.float32) / 127.5 - 1


def write_folder(images_uint8, path):
    path.mkdir()
    for i, img in enumerate(images_uint8.numpy()):
        PIL.Image.fromarray(img.transpose(1, 2, 0)).save(path / f'img{i:05d}.png')
    return dict(class_name='training.dataset.ImageFolderDataset', path=str(path))


def monitor_on(images_float, real_pbar, chunk=64):
    monitor = SpectralMonitor(real_pbar, 'cpu')
    for part in images_float.split(chunk):
        monitor.observe(part)
    return monitor.finish_tick()


def test_monitor_equals_specdisc_on_the_same_images(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    reals, kwargs = reals_and_kwargs()
    fakes = blurred(reals)
    got = monitor_on(as_float(fakes), real_mean_spectrum(kwargs))
    result = metric_main.calc_metric('specdisc1k', dataset_kwargs=kwargs,
                                     gen_dataset_kwargs=write_folder(fakes, tmp_path / 'fakes'))
    want = result.results
    for band in ('low', 'mid', 'high', 'leakage'):
        name = f'Spectral/db_{band}' if band != 'leakage' else 'Spectral/leakage'
        assert got[name] == pytest.approx(want[f'specdisc1k_{band}'], rel=1e-9, abs=1e-12), band


def test_blurring_generator_shows_in_the_high_band(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    reals, kwargs = reals_and_kwargs()
    real_pbar = real_mean_spectrum(kwargs)
    same = monitor_on(as_float(reals), real_pbar)
    assert all(same[name] < 1e-9 for name in STAT_NAMES)                 # the reals themselves: no discrepancy
    blur = monitor_on(as_float(blurred(reals)), real_pbar)
    assert blur['Spectral/db_high'] > 10 * blur['Spectral/db_low'] and blur['Spectral/db_high'] > 5.0
    # Independent check of the definition on the same numbers: the radial dB profiles, by hand.
    gen_pbar = np.mean([np.abs(np.fft.fftshift(np.fft.fft2(np.hanning(16)[:, None] * np.hanning(16)[None, :]
                                                           * (g - g.mean())))) ** 2 / 256
                        for g in as_float(blurred(reals)).double().mean(1).numpy()], axis=0)
    yy, xx = np.mgrid[0:16, 0:16]
    radius = np.floor(np.hypot(yy - 8, xx - 8)).astype(int)
    prof = lambda p: np.array([p[radius == k].mean() for k in range(radius.max() + 1)])  # noqa: E731
    diff = np.abs(10 * np.log10(prof(gen_pbar) + 1e-20) - 10 * np.log10(prof(real_pbar) + 1e-20))
    high = (np.arange(len(diff)) / 16) >= 0.25
    assert blur['Spectral/db_high'] == pytest.approx(diff[high].mean(), rel=1e-5)


def _two_process_monitor(proc, images, real_pbar, out):
    part = images[proc.rank::2]                  # each process sees half the batch
    result = monitor_on(part, real_pbar, chunk=16)
    if proc.rank == 0:
        torch.save(result, out)


def test_two_processes_equal_one(tmp_path, monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    reals, kwargs = reals_and_kwargs()
    real_pbar = real_mean_spectrum(kwargs)
    images = as_float(blurred(reals))
    one = monitor_on(images, real_pbar)
    distributed.launch(_two_process_monitor, num_procs=2, args=(images, real_pbar, str(tmp_path / 'two.pt')))
    two = torch.load(tmp_path / 'two.pt')
    for name in STAT_NAMES:
        assert two[name] == pytest.approx(one[name], rel=1e-9), name


def tiny_run(run_dir, **flags):
    _, options = builders.tiny_options(run_dir, **flags)
    options.kimg_per_tick = 0.016
    options.image_snapshot_ticks = options.network_snapshot_ticks = 2
    return options


def test_training_run_with_the_monitor(tmp_path, monkeypatch, quick_grids):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    run_dir = tmp_path / 'run'
    options = tiny_run(run_dir, freq_shift='out')
    assert options.spectral_monitor is True                       # on by default with a frequency shift
    options.total_kimg = 0.048                                    # 6 steps: ticks at 1, 3, 5, 6 steps
    training_loop.training_loop(rank=0, **options)
    stats = [json.loads(line) for line in open(run_dir / 'stats.jsonl')]
    assert len(stats) == 4
    for entry in stats:
        assert all(name in entry and np.isfinite(entry[name]['mean']) for name in STAT_NAMES)
    files = sorted(os.listdir(run_dir))
    assert 'spectral-monitor.png' in files and 'spectrum-000000.png' in files
    for name in ('spectral-monitor.png', 'spectrum-000000.png'):
        with PIL.Image.open(run_dir / name) as im:
            assert im.size[0] > 200 and im.size[1] > 200
    first = read_curve(run_dir / 'stats.jsonl')
    assert len(first['kimg']) == 4

    # Continued in place: the curve continues (same file, more points, kimg increasing).
    options.total_kimg = 0.080
    options.resume_pkl = str(run_dir / 'network-snapshot-000000.pkl')
    options.resume_progress = True
    training_loop.training_loop(rank=0, **options)
    curve = read_curve(run_dir / 'stats.jsonl')
    assert len(curve['kimg']) > 4 and curve['kimg'][:4] == first['kimg']
    assert np.all(np.diff(curve['kimg']) > 0) and curve['kimg'][-1] == pytest.approx(0.080)


def test_off_by_default_without_features_and_flag_wins():
    _, plain = config.training_options(data=DATA, cbase=256, cmax=32)
    assert 'spectral_monitor' not in plain
    _, forced = config.training_options(data=DATA, cbase=256, cmax=32, spectral_monitor=True)
    assert forced.spectral_monitor is True
    _, ssd = config.training_options(data=DATA, cbase=256, cmax=32, cfg='ssd')
    assert ssd.spectral_monitor is True
    _, off = config.training_options(data=DATA, cbase=256, cmax=32, cfg='ssd', spectral_monitor=False)
    assert 'spectral_monitor' not in off


def test_specdisc_figure_values_match_the_shared_definition():
    """The monitor reports the same definition the metric module exports (one home)."""
    rng = np.random.RandomState(0)
    a, b = rng.rand(16, 16) + 0.1, rng.rand(16, 16) + 0.1
    bands = specmetrics.spectral_discrepancy(a, b)
    monitor = SpectralMonitor(a, 'cpu')
    monitor._sum[:-1] = torch.from_numpy(b.reshape(-1) * 3)
    monitor._sum[-1] = 3
    out = monitor.finish_tick()
    assert out['Spectral/db_mid'] == pytest.approx(bands['mid']) and out['Spectral/leakage'] == pytest.approx(bands['leakage'])


def test_off_carrier_generator_is_called_out():
    """Cosine data at (15,15)/32: a generator whose energy sits at (16,16) and (14,14) (the output
    shift's failure) is reported; one on the carrier is not."""
    from training import synthetic
    spec = synthetic.CosineSpec(resolution=32, freqs=((15, 15),))
    m, p = synthetic.sample_cosine_params(spec, 256, seed=0)
    real = torch.from_numpy(synthetic.to_uint8(synthetic.render_cosines(spec, m, p)))[:, None]
    real_pbar = specmetrics.batch_power_sum(real).reshape(32, 32).numpy() / 256
    monitor = SpectralMonitor(real_pbar, 'cpu')
    y, x = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing='ij')
    beside = 0.3 * torch.cos(torch.pi * (x + y)) + 0.2 * torch.cos(2 * torch.pi * 14 * (x + y) / 32)
    monitor.observe(beside.expand(64, 1, 32, 32))
    monitor.finish_tick()
    assert monitor.warning and 'next to the data' in monitor.warning
    assert 'next to the data' in monitor.notice(done=False)
    monitor.observe(beside.expand(64, 1, 32, 32))      # still beside: the log is not repeated
    monitor.finish_tick()
    assert monitor.warning and monitor.notice(done=False) is None
    monitor.observe(as_float(real[:64]))
    monitor.finish_tick()
    assert monitor.warning is None
    assert 'now peaks on' in monitor.notice(done=False) and monitor.notice(done=False) is None


def test_run_that_ends_beside_the_peak_is_reported_as_failed():
    """The last tick's verdict is printed even when the earlier ticks already said so."""
    from training import synthetic
    spec = synthetic.CosineSpec(resolution=32, freqs=((15, 15),))
    m, p = synthetic.sample_cosine_params(spec, 256, seed=0)
    real = torch.from_numpy(synthetic.to_uint8(synthetic.render_cosines(spec, m, p)))[:, None]
    monitor = SpectralMonitor(specmetrics.batch_power_sum(real).reshape(32, 32).numpy() / 256, 'cpu')
    y, x = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing='ij')
    beside = 0.3 * torch.cos(torch.pi * (x + y))
    for done in (False, False, True):
        monitor.observe(beside.expand(64, 1, 32, 32))
        monitor.finish_tick()
        text = monitor.notice(done=done)
    assert 'training ended this way' in text
    monitor.observe(as_float(real[:64]))
    monitor.finish_tick()
    assert 'now peaks on' in monitor.notice(done=True)


def test_no_peak_warning_for_a_generator_far_from_the_peak():
    """A generator that has not found the data's peak at all (low frequencies only) shows in
    db_high; the peak warning is for energy beside the peak."""
    from training import synthetic
    spec = synthetic.CosineSpec(resolution=32, freqs=((15, 15),))
    m, p = synthetic.sample_cosine_params(spec, 256, seed=0)
    real = torch.from_numpy(synthetic.to_uint8(synthetic.render_cosines(spec, m, p)))[:, None]
    monitor = SpectralMonitor(specmetrics.batch_power_sum(real).reshape(32, 32).numpy() / 256, 'cpu')
    y, x = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing='ij')
    monitor.observe((0.3 * torch.cos(2 * torch.pi * (x + y) / 32)).expand(64, 1, 32, 32))
    result = monitor.finish_tick()
    assert monitor.warning is None and result['Spectral/db_high'] > 10


def test_generator_on_the_carrier_with_a_little_energy_beside_it_is_not_called_out():
    """The Hann window spreads the (15,15)/32 carrier into the next radial bin, where the data
    itself is only ~1 dB below its peak: images on the carrier plus a faint (16,16) component have
    their maximum in that bin (as a successful output-shift run can) without being a failure. The
    same images with a stronger (16,16) component are called out."""
    from training import synthetic
    spec = synthetic.CosineSpec(resolution=32, freqs=((15, 15),))
    m, p = synthetic.sample_cosine_params(spec, 256, seed=0)
    real = torch.from_numpy(synthetic.to_uint8(synthetic.render_cosines(spec, m, p)))[:, None]
    real_pbar = specmetrics.batch_power_sum(real).reshape(32, 32).numpy() / 256
    freqs, real_db = specmetrics.radial_db_profile(real_pbar)
    y, x = torch.meshgrid(torch.arange(32.), torch.arange(32.), indexing='ij')
    nyquist = torch.cos(torch.pi * (x + y))
    for amplitude, called_out in ((0.04, False), (0.12, True)):
        monitor = SpectralMonitor(real_pbar, 'cpu')
        monitor.observe(as_float(real[:64]) + amplitude * nyquist)
        monitor.finish_tick()
        _, gen_db = specmetrics.radial_db_profile(monitor.last_pbar)
        assert int(np.argmax(gen_db[1:])) + 1 == int(np.argmax(real_db[1:])) + 2     # the maximum moved a bin out
        assert bool(monitor.warning) == called_out, (amplitude, monitor.warning)
