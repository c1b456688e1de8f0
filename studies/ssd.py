"""Does SSD-GAN's spectral branch change the spectrum a generator learns? Plain vs --cfg=ssd.

    python -m studies ssd --outdir=study-ssd                  # builtin:blobs32, 20 kimg, 3 seeds

Trains the plain generator and the --cfg=ssd one at equal kimg on each seed (same flags otherwise),
then evaluates specdisc10k on each final G_ema against the training set. Writes ssd.json (every run,
mean and std per variant of every specdisc band and the leakage, and the per-seed differences).
"""

from __future__ import annotations

import json
import os
import time

from metrics import metric_main
from stylefreq import checkpoint, files
from studies import runs

VARIANTS = {'plain': {}, 'ssd': dict(cfg='ssd', spectral_monitor=False)}
KEYS = ('all', 'low', 'mid', 'high', 'leakage')


def run(outdir, setup: runs.Setup, data='builtin:blobs32', seeds=(0, 1, 2), metric='specdisc10k', say=print):
    os.makedirs(outdir, exist_ok=True)
    results = {}
    for variant, flags in VARIANTS.items():
        results[variant] = []
        for seed in seeds:
            run_dir = os.path.join(outdir, 'runs', f'{variant}-seed{seed}')
            result_path = os.path.join(run_dir, 'result.json')
            done = runs.finished_result(result_path, setup, data=data, metric=metric)
            if done is not None:
                results[variant].append(done)
                continue
            say(f'--- {variant}, seed {seed}: training {setup.kimg} kimg ---')
            started = time.time()
            snapshot = runs.train(run_dir, data, flags, seed, setup)
            trained = checkpoint.load_network_pkl(snapshot, verbose=False)
            values = metric_main.calc_metric(metric, G=trained['G_ema'], dataset_kwargs=trained['training_set_kwargs'],
                                             device=setup.device).results
            result = dict(variant=variant, seed=seed, setup=runs.result_setup(setup, data=data, metric=metric),
                          snapshot=os.path.relpath(snapshot, outdir),
                          train_seconds=round(time.time() - started, 1),
                          **{k: values[f'{metric}_{k}'] for k in KEYS})
            files.write_text(result_path, json.dumps(result, indent=1))
            results[variant].append(result)
    table = {variant: {k: runs.summary([r[k] for r in rs]) for k in KEYS} for variant, rs in results.items()}
    differences = {k: runs.summary([s[k] - p[k] for p, s in zip(results['plain'], results['ssd'])]) for k in KEYS}
    out = dict(setup=vars(setup), data=data, metric=metric, seeds=list(seeds), variants=table,
               ssd_minus_plain=differences, runs=[r for rs in results.values() for r in rs])
    files.write_text(os.path.join(outdir, 'ssd.json'), json.dumps(out, indent=1))
    for k in KEYS:
        say(f'{metric}_{k:8s} plain {table["plain"][k]["mean"]:.3f} +- {table["plain"][k]["std"]:.3f}   '
            f'ssd {table["ssd"][k]["mean"]:.3f} +- {table["ssd"][k]["std"]:.3f}   '
            f'ssd - plain {differences[k]["mean"]:+.3f} +- {differences[k]["std"]:.3f}')
    return out
