"""The spectral monitor: the specdisc bands of the images the generator made during each tick.

Every Gmain step hands its generated batch to `SpectralMonitor.observe` (through the loss's
`observe_fakes` hook: no extra generator pass). The batch is quantised to uint8 exactly as the
metrics do and its windowed, DC-free power spectra are summed on the device (no host copy per
step). At the tick the sums are reduced over processes and compared with the real images' mean
spectrum, which is computed once from the training set through the specdisc metric's cached
statistics (the same cache entry as `specdisc10k`):

    Spectral/db_low, db_mid, db_high   mean |dB difference| of the radial profiles per band
    Spectral/leakage                   total variation between the normalised 2-D spectra

i.e. `calc_metrics.py --metrics=specdisc` applied to the tick's fakes (same definition, same numbers).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from metrics import plot, specdisc
from stylefreq import distributed, files, metric_streams, specmetrics
from training import training_stats

REAL_IMAGES = 10000          # as specdisc10k: the monitor reuses that metric's cached real spectrum
PEAK_PROMINENCE_DB = 20.0    # a real radial profile whose maximum stands this far above its median has a peak
NEAR_PEAK_BINS = 3           # "beside the peak": the generated maximum within this many radial bins
BESIDE_EXCESS_DB = 4.2       # ... holding this much more power than the training images have in that bin (README)
STAT_NAMES = ('Spectral/db_low', 'Spectral/db_mid', 'Spectral/db_high', 'Spectral/leakage')


def real_mean_spectrum(training_set_kwargs, num_gpus=1, rank=0, device='cpu', max_items=REAL_IMAGES):
    """The mean 2-D power spectrum [H, W] of (up to max_items of) the training images, unflipped,
    through the metrics' statistics cache."""
    dataset_kwargs = dict(training_set_kwargs, xflip=False, max_size=None)
    opts = metric_streams.MetricOptions(dataset_kwargs=dataset_kwargs, num_gpus=num_gpus, rank=rank, device=device)
    stream = metric_streams.DatasetStream(opts, opts.dataset_kwargs, max_items=max_items, tag='dataset spectra')
    return specmetrics.mean_power_spectrum(opts, stream, cached=True)


def dominant_peak(profile_db):
    """The radial bin (not DC) of a profile's maximum when it stands out (a carrier), else None."""
    rest = np.asarray(profile_db)[1:]
    k = int(np.argmax(rest))
    return k + 1 if rest[k] - np.median(rest) >= PEAK_PROMINENCE_DB else None


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 as the metrics (and generate.py) quantise them."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


class SpectralMonitor:
    """Accumulates the power spectra of generated batches; `finish_tick` reports the bands."""

    def __init__(self, real_pbar: np.ndarray, device):
        self.real_pbar = np.asarray(real_pbar, dtype=np.float64)
        self.device = torch.device(device)
        H, W = self.real_pbar.shape
        self._sum = torch.zeros([H * W + 1], dtype=torch.float64, device=self.device)   # spectra sum, count
        self.last_pbar = None           # the previous tick's mean generated spectrum (for figures)
        self.last_results = None
        self.warning = None             # set when the generated spectrum peaks elsewhere than the real one
        self._told_off_peak = False     # the log already says so (messages are printed on changes only)
        self._freqs, self._real_db = specmetrics.radial_db_profile(self.real_pbar)
        self._real_peak = dominant_peak(self._real_db)

    def observe(self, images: torch.Tensor) -> None:
        """Add a batch of generated images [N, C, H, W] in [-1, 1] (called inside the training step)."""
        with torch.no_grad():
            power = specmetrics.batch_power_sum(to_uint8(images.detach()))
            self._sum[:-1] += power[0].to(self._sum.device)
            self._sum[-1] += images.shape[0]

    def finish_tick(self) -> dict | None:
        """Reduce this tick's spectra over processes, report the four statistics, reset. None (and
        nothing reported) when the tick produced no images."""
        total = distributed.all_reduce_sum_(self._sum.clone()).cpu().numpy()
        self._sum.zero_()
        count = total[-1]
        if count == 0:
            return None
        self.last_pbar = (total[:-1] / count).reshape(self.real_pbar.shape)
        bands = specmetrics.spectral_discrepancy(self.real_pbar, self.last_pbar)
        self.last_results = {'Spectral/db_low': bands['low'], 'Spectral/db_mid': bands['mid'],
                             'Spectral/db_high': bands['high'], 'Spectral/leakage': bands['leakage']}
        for name, value in self.last_results.items():
            training_stats.report0(name, value)
        self.warning = None
        if self._real_peak is not None:
            _, gen_db = specmetrics.radial_db_profile(self.last_pbar)
            gen_peak = int(np.argmax(gen_db[1:])) + 1
            excess = float(gen_db[gen_peak] - self._real_db[gen_peak])
            # The failure this names: energy in a band beside the data's peak (e.g. the output
            # shift landing on (16,16) for data at (15,15)). The Hann window spreads a carrier over
            # neighbouring bins, so the data's own profile is nearly as high next to its peak; a
            # generator on the carrier may have its maximum there too, but not well above the
            # data's level (at most 1.8 dB in the cosine study's successful runs, 5-9 dB in the
            # failed ones). A generator that has not found the peak at all shows in db_high instead.
            if 0 < abs(gen_peak - self._real_peak) <= NEAR_PEAK_BINS and excess > BESIDE_EXCESS_DB:
                self.warning = (f'warning: the generated images\' spectrum peaks at {self._freqs[gen_peak]:.3f} '
                                f'cycles/pixel with {excess:.1f} dB more power than the training images have '
                                f'there, and theirs peaks at {self._freqs[self._real_peak]:.3f}: the '
                                f'generator\'s energy sits next to the data\'s peak, not on it')
        return self.last_results

    def notice(self, done: bool) -> str | None:
        """The line to print after this tick, if any. Early in training a shifted generator's
        energy commonly sits beside the data's peak before it moves onto it, so the log says so
        when that starts and when it ends, not every tick; at the last tick a generator still
        beside the peak is reported as a failed run."""
        if self.warning is not None:
            if done:
                return (self.warning + '; training ended this way, so this run has not learned the data\'s '
                        'peak (see spectrum-*.png and spectral-monitor.png in the run directory)')
            if not self._told_off_peak:
                self._told_off_peak = True
                return self.warning + ' (yet: a later tick says when that changes)'
            return None
        if self._told_off_peak:
            self._told_off_peak = False
            return (f'the generated images\' spectrum now peaks on the training images\' peak '
                    f'({self._freqs[self._real_peak]:.3f} cycles/pixel)')
        return None

    def tick_summary(self) -> str:
        r = self.last_results
        if r is None:
            return ''
        return (f'spectral dB low/mid/high {r["Spectral/db_low"]:.2f}/{r["Spectral/db_mid"]:.2f}/'
                f'{r["Spectral/db_high"]:.2f} leakage {r["Spectral/leakage"]:.3f}')

    def save_spectrum(self, path) -> None:
        """spectrum-<kimg>.png: the real and generated radial profiles, their difference, the 2-D spectra."""
        if self.last_pbar is None:
            return
        prefix = 'monitor'
        results = {f'{prefix}_{k}': v for k, v in specmetrics.spectral_discrepancy(self.real_pbar, self.last_pbar).items()}
        image = specdisc.draw_figure(self.real_pbar, self.last_pbar, results, prefix)
        save_png(image, path)


def save_png(image, path) -> None:
    """Write a PIL image atomically."""
    with files.atomic_write(path, 'wb') as f:
        image.save(f, format='PNG')


def read_curve(stats_path) -> dict:
    """{kimg: [...], 'Spectral/db_low': [...], ...} from a run's stats.jsonl (ticks with the monitor)."""
    curve = {'kimg': [], **{name: [] for name in STAT_NAMES}}
    if not os.path.exists(stats_path):
        return curve
    with open(stats_path, encoding='utf-8') as f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue                    # a line cut short by a crash
            if not isinstance(entry, dict) or STAT_NAMES[0] not in entry:
                continue
            curve['kimg'].append(float(entry['Progress/kimg']['mean']))
            for name in STAT_NAMES:
                curve[name].append(float(entry[name]['mean']))
    return curve


def save_curve(run_dir) -> str | None:
    """spectral-monitor.png: the three bands (dB) over kimg, from the whole stats.jsonl (so a
    continued run continues the curve). Returns the path, or None when there is nothing to draw."""
    curve = read_curve(os.path.join(run_dir, 'stats.jsonl'))
    if not curve['kimg']:
        return None
    kimg = np.asarray(curve['kimg'])
    series = [(band, kimg, np.asarray(curve[f'Spectral/db_{band}'])) for band in ('low', 'mid', 'high')]
    chart = plot.line_chart(series, title='spectral monitor: |generated - real| radial profile per band',
                            xlabel='kimg', ylabel='mean |difference| (dB)', hline=0.0)
    path = os.path.join(run_dir, 'spectral-monitor.png')
    save_png(chart, path)
    return path
