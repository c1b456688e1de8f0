"""The bias curve: how well each generator variant learns a carrier, as a function of its frequency.

    python -m studies bias_curve --outdir=bias --resolution=32 --carriers=1,3,5,7,9,11,13,15 \\
        --variants=base,out,fsg,ssd --kimg=20

One job per (carrier, variant, seed) on planar cosines at (c, c) cycles per image (studies.runs).
Writes bias_curve.json (every job, the mean magnitude W1 and TV per carrier and variant, the
real-vs-real reference per carrier) and bias_curve.png (W1 against the carrier's radial frequency
c*sqrt(2)/R cycles/pixel, one line per variant, and the reference). Run again to continue.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from metrics import plot
from stylefreq import files
from studies import runs


def run(outdir, setup: runs.Setup, carriers=(1, 3, 5, 7, 9, 11, 13, 15), variants=runs.VARIANTS[:4], seeds=(0,),
        say=print):
    os.makedirs(outdir, exist_ok=True)
    pairs = [(c, c) for c in carriers]
    for pair in pairs:
        if not 0 < pair[0] <= setup.resolution // 2:
            raise ValueError(f'carrier {pair[0]} is outside 1..{setup.resolution // 2} cycles per image')
        for variant in variants:
            runs.check_variant(variant, pair, setup.resolution)
    jobs = [runs.run_job(outdir, setup, pair, v, s, say) for pair in pairs for v in variants for s in seeds]
    curve = {}
    for variant in variants:
        rows = []
        for pair in pairs:
            mine = [j for j in jobs if j['variant'] == variant and tuple(j['carrier']) == pair]
            rows.append(dict(carrier=pair[0], w1=runs.summary([j['magnitude']['w1'] for j in mine]),
                             tv=runs.summary([j['magnitude']['tv'] for j in mine])))
        curve[variant] = rows
    references = {str(pair[0]): runs.reference(outdir, setup, pair)['magnitude'] for pair in pairs}
    out = dict(setup=vars(setup), carriers=list(carriers), variants=list(variants), seeds=list(seeds),
               frequency_cycles_per_pixel={str(c): c * math.sqrt(2) / setup.resolution for c in carriers},
               curve=curve, reference=references,
               jobs=[{k: v for k, v in j.items() if k != 'magnitudes'} for j in jobs])
    files.write_text(os.path.join(outdir, 'bias_curve.json'), json.dumps(out, indent=1))
    draw(os.path.join(outdir, 'bias_curve.png'), setup.resolution, carriers, curve, references)
    for variant, rows in curve.items():
        say(f'{variant:5s} W1 ' + '  '.join(f'{r["carrier"]}:{r["w1"]["mean"]:.3f}' for r in rows))
    return out


def draw(path, resolution, carriers, curve, references):
    freqs = np.array([c * math.sqrt(2) / resolution for c in carriers])
    series = [(variant, freqs, [r['w1']['mean'] for r in rows]) for variant, rows in curve.items()]
    series.append(('real vs real', freqs, [references[str(c)]['w1'] for c in carriers]))
    chart = plot.line_chart(series, title=f'bias curve at {resolution} px: magnitude W1 per carrier',
                            xlabel='carrier frequency (cycles/pixel, radial)', ylabel='W1 (magnitude)',
                            size=(640, 400), markers=True)
    with files.atomic_write(path, 'wb') as f:
        chart.save(f, format='PNG')
