"""Training small GANs on planar-cosine data through stylefreq's entry points, and measuring how well
each learnt its carrier. What the cosine study and the bias curve have in common.

A *job* is one training run: (carrier, variant, seed) on a cosine dataset at one resolution. Jobs
run through `training.config.training_options` and `training.launch.launch`, exactly as
`train.py` runs them (the same flags, so a study's numbers are what a user of train.py gets), each
in `<outdir>/runs/<job>/`. A finished job leaves `result.json`; running a study again skips those
and starts over the unfinished one, so a study resumes where it stopped.

Measurement (metrics.carrier_distance, the authors' evaluation): `samples` images from the final
snapshot's G_ema (random noise) and as many held-out real images (fresh draws of the data
distribution); per carrier, the magnitude and phase of each image's DFT coefficient, histogrammed
with 128 bins; W1 and TV between the histograms. The same distances between the training images and
the held-out ones are the reference: what finite samples give for a perfect generator.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import numpy as np
import torch

from metrics import carrier_distance
from stylefreq import checkpoint, files, metric_streams
from training import config, launch, synthetic
from training.dataset import ImageFolderDataset
from training.dataset_writer import write_cosine_dataset

VARIANTS = ('base', 'out', 'fsg', 'ssd', 'out-aa', 'base-noaa')
VARIANT_HELP = ('base: the plain generator; out: --freq-shift=out (the (-1)^(x+y) output shift, by default '
                'with a D without anti-aliasing, --d-antialias=0); fsg: one FSG carrier at the data\'s frequency; '
                'ssd: the plain generator with --cfg=ssd; out-aa: the output shift with the anti-aliased D '
                '(upstream\'s, --d-antialias=1); '
                'base-noaa: the plain generator with --d-antialias=0 (a control)')


@dataclasses.dataclass
class Setup:
    """What every job of a study shares (train.py flags, data and measurement sizes)."""
    resolution: int = 32
    count: int = 5000               # training images per dataset
    kimg: int = 20
    batch: int = 32
    cbase: int = 2048
    cmax: int = 64
    map: int = 2
    gamma: float = 1.0
    samples: int = 1000             # generated and held-out images per measurement
    gpus: int = 1
    device: str | None = None
    threads: int | None = None


# The Setup fields that decide what a run learns or how it is measured (not where or how fast it runs).
RESULT_FIELDS = ('resolution', 'count', 'kimg', 'batch', 'cbase', 'cmax', 'map', 'gamma', 'samples')


def result_setup(setup: Setup, **extra) -> dict:
    """What a result.json records of the settings that made it."""
    return dict({k: getattr(setup, k) for k in RESULT_FIELDS}, **extra)


def finished_result(result_path, setup: Setup, **extra) -> dict | None:
    """The result of a finished run, None when the run has not finished. A result made with other
    settings is an error (ValueError naming the file): a study never mixes runs of two setups."""
    if not os.path.isfile(result_path):
        return None
    try:
        with open(result_path, encoding='utf-8') as f:
            result = json.load(f)
        made = result['setup']
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f'{result_path} is not a result this study wrote ({type(err).__name__}: {err}); '
                         'delete it to rerun that job') from None
    wanted = result_setup(setup, **extra)
    if made != wanted:
        differ = ', '.join(f'{k} {made.get(k)!r} instead of {v!r}' for k, v in wanted.items() if made.get(k) != v)
        raise ValueError(f'{result_path} was made with other settings ({differ}); use another --outdir '
                         'or the settings it was made with')
    return result


def variant_flags(variant: str, carrier, resolution: int) -> dict:
    """train.py flags that make `variant` for a dataset whose carrier is (fx, fy) cycles per image."""
    fx, fy = carrier
    flags = {'base': {}, 'out': dict(freq_shift='out'), 'out-aa': dict(freq_shift='out', d_antialias=True),
             'fsg': dict(freq_shift=f'{fx}/{resolution},{fy}/{resolution}'), 'ssd': dict(cfg='ssd'),
             'base-noaa': dict(d_antialias=False)}
    if variant not in flags:
        raise ValueError(f'unknown variant {variant!r}; choose from {", ".join(VARIANTS)}')
    return flags[variant]


def check_variant(variant: str, carrier, resolution: int) -> None:
    variant_flags(variant, carrier, resolution)          # an unknown name is its ValueError
    if variant == 'fsg':
        fx, fy = carrier
        if resolution < 16:
            raise ValueError(f'variant fsg needs --resolution >= 16 (its branches start at R/4), got {resolution}')
        if (fx % resolution, fy % resolution) == (0, 0):
            raise ValueError('variant fsg needs a carrier other than DC')


# ---------------------------------------------------------------------------------------------------
# Data.

def cosine_spec(resolution, carrier):
    return synthetic.CosineSpec(resolution=resolution, freqs=(tuple(carrier),))


def dataset(outdir, setup: Setup, carrier) -> str:
    """The training set for `carrier` (written once, then reused)."""
    fx, fy = carrier
    path = os.path.join(outdir, 'data', f'cos{setup.resolution}-{fx}x{fy}-n{setup.count}.zip')
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_cosine_dataset(path, cosine_spec(setup.resolution, carrier), setup.count, seed=0)
    return path


def training_images(path):
    """uint8 [N, R, R] images of a one-channel dataset."""
    ds = ImageFolderDataset(path=path, use_labels=False)
    try:
        return np.stack([ds[i][0][0] for i in range(len(ds))])
    finally:
        ds.close()


def held_out(spec, count, seed=1_000_001):
    """Fresh draws of the data distribution (not in the training set), quantised as the data."""
    mags, phases = synthetic.sample_cosine_params(spec, count, seed)
    return synthetic.to_uint8(synthetic.render_cosines(spec, mags, phases))


# ---------------------------------------------------------------------------------------------------
# Jobs.

def job_name(carrier, variant, seed, factor=None) -> str:
    tag = f'-{factor}' if factor else ''
    return f'{carrier[0]}x{carrier[1]}-{variant}{tag}-seed{seed}'


def train(run_dir, data, flags: dict, seed: int, setup: Setup, edit=None) -> str:
    """Train one job in `run_dir` from scratch (a leftover of an interrupted job is removed);
    returns its final snapshot. `edit(options)`, when given, changes the training options that
    train.py's flags made (an ablation's one change) before the run starts."""
    if os.path.exists(run_dir):
        shutil.rmtree(run_dir)
    _, options = config.training_options(
        data=data, gpus=setup.gpus, cbase=setup.cbase, cmax=setup.cmax, map=setup.map, batch=setup.batch,
        gamma=setup.gamma, kimg=setup.kimg, aug='noaug', metrics=[], seed=seed, snap=10 ** 6, workers=0, **flags)
    if edit is not None:
        edit(options)
    options.run_dir = run_dir
    launch.launch(options, threads=setup.threads, device=setup.device)
    snapshots = sorted(name for name in os.listdir(run_dir) if name.startswith('network-snapshot-'))
    return os.path.join(run_dir, snapshots[-1])


@torch.no_grad()
def generate(snapshot, count, seed, device=None):
    """uint8 [count, R, R]: the first channel of `count` images of the snapshot's G_ema, random noise."""
    G = checkpoint.load_network_pkl(snapshot, verbose=False)['G_ema']
    device = torch.device(device) if device is not None else metric_streams.MetricOptions().device
    opts = metric_streams.MetricOptions(G=G, G_kwargs=dict(noise_mode='random'), device=device, seed=seed,
                                        batch_size=250)
    stream = metric_streams.generated_stream(opts, count, tag=f'generate {os.path.basename(snapshot)}')
    return torch.cat([stream(g) for g in range(stream.num_batches)])[:, 0].cpu().numpy()


def measure(real, fake, spec) -> dict:
    """The carrier's distances (magnitude and phase W1/TV) and the mean magnitudes."""
    distances = carrier_distance.cosine_distances(real, fake, spec)[0]
    real_m, _ = synthetic.estimate_cosine_params(real, spec)
    fake_m, _ = synthetic.estimate_cosine_params(fake, spec)
    return dict(distances, mean_magnitude_real=float(real_m.mean()), mean_magnitude_fake=float(fake_m.mean()))


def run_job(outdir, setup: Setup, carrier, variant, seed, say=print, factor=None, flags=None, edit=None) -> dict:
    """Train and measure one job, or read its result if it already finished. `factor` names what an
    ablation changed (in the job's name and its recorded setup): train.py `flags` added to the
    variant's, and/or an `edit` of the training options (see train)."""
    name = job_name(carrier, variant, seed, factor)
    run_dir = os.path.join(outdir, 'runs', name)
    result_path = os.path.join(run_dir, 'result.json')
    extra = {'factor': factor} if factor else {}
    done = finished_result(result_path, setup, **extra)
    if done is not None:
        return done
    check_variant(variant, carrier, setup.resolution)
    data = dataset(outdir, setup, carrier)
    say(f'--- {name}: training {setup.kimg} kimg at {setup.resolution} px ---')
    started = time.time()
    snapshot = train(run_dir, data, dict(variant_flags(variant, carrier, setup.resolution), **(flags or {})), seed,
                     setup, edit)
    spec = cosine_spec(setup.resolution, carrier)
    fake = generate(snapshot, setup.samples, seed, setup.device)
    magnitudes, _ = synthetic.estimate_cosine_params(fake, spec)
    result = dict(job=name, setup=result_setup(setup, **extra), carrier=list(carrier), variant=variant, seed=seed,
                  snapshot=os.path.relpath(snapshot, outdir),
                  train_seconds=round(time.time() - started, 1), **measure(held_out(spec, setup.samples), fake, spec),
                  magnitudes=[round(float(m), 5) for m in magnitudes[:, 0]])
    files.write_text(result_path, json.dumps(result, indent=1))
    say(f'--- {name}: magnitude W1 {result["magnitude"]["w1"]:.3f}, TV {result["magnitude"]["tv"]:.3f} ---')
    return result


def reference(outdir, setup: Setup, carrier) -> dict:
    """The real-vs-real distances of a carrier (training images against held-out ones)."""
    spec = cosine_spec(setup.resolution, carrier)
    real = training_images(dataset(outdir, setup, carrier))[:setup.samples]
    return measure(held_out(spec, setup.samples), real, spec)


def summary(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return dict(mean=float(values.mean()), std=float(values.std()), min=float(values.min()), max=float(values.max()),
                n=int(values.size))
