"""One thing at a time: does the output-shift recipe still learn the high carrier when one training
choice changes?

    python -m studies ablation --outdir=study-ablation                 # 32 px, (15,15), 10 kimg, 5 seeds

The reference is the cosine study's `out` variant (`--freq-shift=out`, whose D has no anti-aliasing
by default) at the study setup; each factor changes one thing of it: D's anti-aliasing, D's
architecture, path-length regularisation, style mixing, the EMA, the learning rate, R1's gamma, the
mapping depth, the dataset size. Two more factors, not in the default list, ask whether SSD-GAN's spectral branch (`--cfg=ssd`)
changes the result, with and without D's anti-aliasing. Training length is the `--kimg` of two runs
of this study (or of the cosine study, which runs the reference at 20 kimg). The plain generator is
trained on `--base-seeds` at the same setup: a run *succeeds* when its magnitude W1 is at most half
the plain generator's mean W1 (the cosine study's rule). Jobs run seed by seed (every factor's seed 0, then every factor's seed 1, ...), so a study
stopped early holds the same seeds for every factor; running it again resumes.

Writes ablation.json (per factor: what changed, W1 per seed, mean/std/min/max, successes) and
ablation.png (per factor, the magnitude histograms of the held-out reals and of every seed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import numpy as np

from stylefreq import files
from studies import cosine, runs


@dataclasses.dataclass(frozen=True)
class Factor:
    what: str                                   # the change, in words
    setup: dict = dataclasses.field(default_factory=dict)     # Setup fields it changes
    flags: dict = dataclasses.field(default_factory=dict)     # train.py flags it adds
    edit: Callable | None = None                # its change of the training options (runs.train)
    variant: str = 'out'                        # the studies variant it trains

    @property
    def only_variant(self):
        return not (self.setup or self.flags or self.edit)


def _no_pl(options):
    options.loss_kwargs.pl_weight = 0


def _no_mixing(options):
    options.loss_kwargs.style_mixing_prob = 0


def _no_ema(options):
    options.ema_kimg = 0                        # G_ema = G after every step


def _lr_001(options):
    options.G_opt_kwargs.lr = options.D_opt_kwargs.lr = 0.001


def _d_orig(options):
    options.D_kwargs.architecture = 'orig'


FACTORS = {
    'recipe': Factor('none: --freq-shift=out (with its default --d-antialias=0) at the study setup'),
    'd-aa': Factor("D with upstream's anti-aliasing (--d-antialias=1)", variant='out-aa'),
    'd-orig': Factor("D architecture 'orig' (no residual connections) instead of 'resnet'", edit=_d_orig),
    'no-pl': Factor('no path-length regularisation (pl_weight 0 instead of 2)', edit=_no_pl),
    'no-mix': Factor('no style mixing (probability 0 instead of 0.9)', edit=_no_mixing),
    'no-ema': Factor('no EMA: G_ema is G (ema_kimg 0)', edit=_no_ema),
    'lr0.001': Factor('learning rate 0.001 for G and D instead of 0.0025', edit=_lr_001),
    'gamma10': Factor('R1 gamma 10', setup=dict(gamma=10.0)),
    'map8': Factor('8 mapping layers', setup=dict(map=8)),
    'count1000': Factor('1000 training images', setup=dict(count=1000)),
    'ssd': Factor("SSD-GAN's spectral branch in D (--cfg=ssd)", flags=dict(cfg='ssd')),
    'ssd-aa': Factor("--cfg=ssd with upstream's anti-aliasing in the spatial D (--d-antialias=1): does the "
                     "spectral branch replace D's view near Nyquist?", flags=dict(cfg='ssd'), variant='out-aa'),
}
DEFAULT_FACTORS = tuple(name for name in FACTORS if not name.startswith('ssd'))


def _job(outdir, setup, carrier, name, seed, say):
    factor = FACTORS[name]
    return runs.run_job(outdir, dataclasses.replace(setup, **factor.setup), carrier, factor.variant, seed, say,
                        factor=None if factor.only_variant else name, flags=factor.flags, edit=factor.edit)


def run(outdir, setup: runs.Setup, carrier=(15, 15), factors=DEFAULT_FACTORS, seeds=(0, 1, 2, 3, 4),
        base_seeds=(0, 1), say=print):
    os.makedirs(outdir, exist_ok=True)
    unknown = [f for f in factors if f not in FACTORS]
    if unknown:
        raise ValueError(f'unknown factor {unknown[0]!r}; choose from {", ".join(FACTORS)}')
    base = [runs.run_job(outdir, setup, carrier, 'base', s, say) for s in base_seeds]
    results = {name: [] for name in factors}
    for seed in seeds:
        for name in factors:
            results[name].append(_job(outdir, setup, carrier, name, seed, say))
    base_w1 = float(np.mean([r['magnitude']['w1'] for r in base]))
    table = {}
    for name, per_seed in results.items():
        w1 = [r['magnitude']['w1'] for r in per_seed]
        factor = FACTORS[name]
        table[name] = dict(what=factor.what, variant=factor.variant, setup_changes=factor.setup, flags=factor.flags,
                           magnitude_w1=runs.summary(w1), per_seed={str(r['seed']): r['magnitude']['w1'] for r in per_seed},
                           successes=int(sum(v <= 0.5 * base_w1 for v in w1)),
                           train_minutes=runs.summary([r['train_seconds'] / 60 for r in per_seed]))
    out = dict(setup=vars(setup), carrier=list(carrier), seeds=list(seeds), base_seeds=list(base_seeds),
               base_magnitude_w1=runs.summary([r['magnitude']['w1'] for r in base]),
               success_rule='W1 <= 0.5 * mean W1 of the plain generator (base) at the same setup',
               factors=table, runs=[{k: v for k, v in r.items() if k != 'magnitudes'}
                                    for per_seed in [base, *results.values()] for r in per_seed])
    files.write_text(os.path.join(outdir, 'ablation.json'), json.dumps(out, indent=1))
    cosine.draw(os.path.join(outdir, 'ablation.png'), setup, carrier, dict(base=base, **results), columns=4)
    say(f'base       magnitude W1 {base_w1:.3f} (seeds {",".join(map(str, base_seeds))}); success: W1 <= {0.5 * base_w1:.3f}')
    for name, entry in table.items():
        s = entry['magnitude_w1']
        seeds_text = ' '.join(f'{v:.3f}' for v in entry['per_seed'].values())
        say(f'{name:10s} magnitude W1 {seeds_text}   mean {s["mean"]:.3f} +- {s["std"]:.3f}   '
            f'{entry["successes"]}/{s["n"]} succeed')
    return out
