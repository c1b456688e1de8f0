"""Benchmark: cost per image of each frequency-shift variant against the plain generator, one run.

For each resolution, the plain StyleGAN2 generator and FrequencyShiftedGenerator in every mode
(out, fsg16, noshift16, learn16) are built from the same base configuration (channel_base 4096,
channel_max 256, z/w 256, mapping 2: the paper's "small" channel ladder, narrowed for the CPU).
Timed: G forward (eval, no grad, const noise) and G forward + backward (train mode, gradient of
a random projection of the image into every parameter). The variants are timed round-robin and
the best of `--repeats` is kept, so a busy machine slows all of them alike; compare the ratios,
and absolute numbers only between runs on the same machine.

    python bench/bench_freqshift.py [--device cpu] [--batch 4] [--repeats 5] [--resolutions 32,64]
"""

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from stylefreq import features  # noqa: E402
from stylefreq.kwargs import construct_class_by_name  # noqa: E402

VARIANTS = ['plain', 'out', 'fsg16', 'noshift16', 'learn16']


def build(variant, res, args, device):
    base = dict(class_name='training.networks.Generator', z_dim=args.zdim, w_dim=args.zdim,
                mapping_kwargs=dict(num_layers=2),
                synthesis_kwargs=dict(channel_base=args.cbase, channel_max=args.cmax))
    kwargs = base if variant == 'plain' else features.freq_shift_G_kwargs(base, **features.parse_freq_shift(variant))
    torch.manual_seed(0)
    G = construct_class_by_name(**kwargs, c_dim=0, img_resolution=res, img_channels=3).to(device)
    if variant not in ('plain', 'out'):
        with torch.no_grad():
            G.synthesis.fsg_gain.fill_(1)    # as after some training (the cost does not depend on it)
    return G


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--resolutions', default='32,64')
    ap.add_argument('--cbase', type=int, default=4096)
    ap.add_argument('--cmax', type=int, default=256)
    ap.add_argument('--zdim', type=int, default=256)
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads [default: torch\'s choice]')
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = dict(benchmark='freqshift', device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                  cpu=platform.processor() or platform.machine(), batch=args.batch,
                  config=dict(channel_base=args.cbase, channel_max=args.cmax, z_dim=args.zdim, mapping_layers=2),
                  results={})
    for res in [int(r) for r in args.resolutions.split(',')]:
        nets = {v: build(v, res, args, device) for v in VARIANTS}
        z = torch.randn(args.batch, args.zdim, device=device)
        proj = torch.randn(args.batch, 3, res, res, device=device)

        def forward(G):
            G.eval()
            with torch.no_grad():
                G(z, None, noise_mode='const')

        def forward_backward(G):
            G.train().requires_grad_(True)
            (G(z, None) * proj).sum().backward()
            G.zero_grad(set_to_none=True)

        best = {v: dict(fwd=float('inf'), fwd_bwd=float('inf')) for v in VARIANTS}
        for v in VARIANTS:                   # warm-up (carrier tables, allocator)
            forward(nets[v])
            forward_backward(nets[v])
        for _ in range(args.repeats):
            for v in VARIANTS:
                for name, fn in (('fwd', forward), ('fwd_bwd', forward_backward)):
                    sync(device)
                    t0 = time.perf_counter()
                    fn(nets[v])
                    sync(device)
                    best[v][name] = min(best[v][name], time.perf_counter() - t0)
        out = {}
        for v in VARIANTS:
            G = nets[v]
            out[v] = dict(
                G_params=sum(p.numel() for p in G.parameters()),
                branches=len(getattr(G.synthesis, 'fsg', [])) if v != 'plain' else 0,
                forward_ms_per_img=round(1000 * best[v]['fwd'] / args.batch, 3),
                fwd_bwd_ms_per_img=round(1000 * best[v]['fwd_bwd'] / args.batch, 3),
                forward_vs_plain=round(best[v]['fwd'] / best['plain']['fwd'], 2),
                fwd_bwd_vs_plain=round(best[v]['fwd_bwd'] / best['plain']['fwd_bwd'], 2))
        result['results'][f'{res}px'] = out
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
