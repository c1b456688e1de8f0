"""The planar-cosine study: does a generator learn one high-frequency carrier, seed after seed?

    python -m studies cosine --outdir=study-cosine                     # 32 px, carrier (15,15), 3 seeds

For each variant (base, out, fsg by default) and seed, a small StyleGAN2 is trained on cosines at
the carrier and measured (studies.runs). A variant *succeeds* on a seed when its magnitude W1 is at
most half the base generator's mean W1. Writes cosine.json (every run, per-variant summaries and
success counts, the real-vs-real reference) and cosine.png (the magnitude histograms of real and
generated images per variant, every seed overlaid).
"""

from __future__ import annotations

import json
import os

import numpy as np

from metrics import carrier_distance, plot
from stylefreq import files
from studies import runs
from training import synthetic


def run(outdir, setup: runs.Setup, carrier=(15, 15), variants=('base', 'out', 'fsg'), seeds=(0, 1, 2), say=print):
    os.makedirs(outdir, exist_ok=True)
    for variant in variants:
        runs.check_variant(variant, carrier, setup.resolution)
    results = {v: [runs.run_job(outdir, setup, carrier, v, s, say) for s in seeds] for v in variants}
    base_w1 = np.mean([r['magnitude']['w1'] for r in results['base']]) if 'base' in results else None
    table = {}
    for variant, per_seed in results.items():
        w1 = [r['magnitude']['w1'] for r in per_seed]
        entry = dict(magnitude_w1=runs.summary(w1), magnitude_tv=runs.summary([r['magnitude']['tv'] for r in per_seed]),
                     mean_magnitude=runs.summary([r['mean_magnitude_fake'] for r in per_seed]),
                     per_seed={str(r['seed']): r['magnitude']['w1'] for r in per_seed})
        if base_w1 is not None and variant != 'base':
            entry['successes'] = int(sum(v <= 0.5 * base_w1 for v in w1))
        table[variant] = entry
    out = dict(setup=vars(setup), carrier=list(carrier), seeds=list(seeds), success_rule='W1 <= 0.5 * mean W1 of base',
               reference=runs.reference(outdir, setup, carrier), variants=table,
               runs=[{k: v for k, v in r.items() if k != 'magnitudes'} for per_seed in results.values() for r in per_seed])
    files.write_text(os.path.join(outdir, 'cosine.json'), json.dumps(out, indent=1))
    draw(os.path.join(outdir, 'cosine.png'), setup, carrier, results)
    for variant, entry in table.items():
        s = entry['magnitude_w1']
        extra = f', {entry["successes"]}/{s["n"]} seeds at most half of base' if 'successes' in entry else ''
        say(f'{variant:5s} magnitude W1 {s["mean"]:.3f} +- {s["std"]:.3f} (min {s["min"]:.3f}, max {s["max"]:.3f}){extra}')
    return out


def draw(path, setup, carrier, results, columns=3):
    """A PNG with one panel per entry of `results` ({label: [result per seed]}): the held-out reals'
    magnitude histogram and every seed's, `columns` panels a row."""
    spec = runs.cosine_spec(setup.resolution, carrier)
    real_m, _ = synthetic.estimate_cosine_params(runs.held_out(spec, setup.samples), spec)
    density, edges = carrier_distance.histogram(real_m[:, 0], carrier_distance.MAGNITUDE_RANGE)
    panels = []
    for label, per_seed in results.items():
        series = [('real', edges, density)]
        for r in per_seed:
            series.append((f'seed {r["seed"]} W1 {r["magnitude"]["w1"]:.2f}', edges,
                           carrier_distance.histogram(r['magnitudes'], carrier_distance.MAGNITUDE_RANGE)[0]))
        panels.append(plot.line_chart(series, title=f'{label}: magnitude at carrier {tuple(carrier)}',
                                      xlabel='magnitude', ylabel='density', size=(420, 300)))
    image = plot.grid([panels[i:i + columns] for i in range(0, len(panels), columns)])
    with files.atomic_write(path, 'wb') as f:
        image.save(f, format='PNG')
