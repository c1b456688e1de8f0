"""Benchmark: generator forward, and G+D forward/backward, per image, at 32 and 64 px.

Networks are built as `train.py --cfg=auto` builds them (channel_base 16384, channel_max 512,
mapping 2 layers, fp16 flags on the top 4 resolutions, conv_clamp 256, mbstd group 4). Every
call passes force_fp32=True: on the CPU stylefreq computes fp16 blocks in float32 anyway, while
upstream would run them in emulated float16, so this compares the same arithmetic.

With STYLEFREQ_UPSTREAM pointing at a stylegan2-ada-pytorch checkout, upstream's own
training/networks.py is loaded (under a private module name, since both projects call their
package `training`) and timed on the same weights, alternating with stylefreq repetition by
repetition so that machine load affects both alike. Prints one JSON object; `ratio` is
upstream time / stylefreq time (above 1: stylefreq is faster). Compare runs on one machine only.

    OMP_NUM_THREADS=1 STYLEFREQ_UPSTREAM=/path/to/stylegan2-ada-pytorch python bench/bench_networks.py
    python bench/bench_networks.py [--device cpu] [--batch 4] [--repeats 5] [--resolutions 32,64]
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from training import networks  # noqa: E402

PRESET_G = dict(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=2),
                synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256))
PRESET_D = dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256,
                epilogue_kwargs=dict(mbstd_group_size=4))


def load_upstream_networks(root):
    """Upstream's training/networks.py as module `_upstream_networks` (its torch_utils from `root`)."""
    path = os.path.join(root, 'training', 'networks.py')
    if not os.path.isfile(path):
        sys.exit(f'STYLEFREQ_UPSTREAM={root} is not a stylegan2-ada-pytorch checkout (no training/networks.py)')
    sys.path.append(os.path.abspath(root))     # after ours: `training` stays stylefreq's
    spec = importlib.util.spec_from_file_location('_upstream_networks', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_pair(module, res, device, weights_from=None):
    common = dict(c_dim=0, img_resolution=res, img_channels=3)
    G = module.Generator(**PRESET_G, **common)
    D = module.Discriminator(**PRESET_D, **common)
    if weights_from is not None:                # same tensor names: copy by name
        for dst, src in zip((G, D), weights_from):
            dst.load_state_dict(src.state_dict())
    return G.to(device), D.to(device)


def make_steps(G, D, z, c):
    def g_forward():
        with torch.no_grad():
            return G.eval()(z, c, noise_mode='const', force_fp32=True)

    def g_d_train_step():
        G.train().requires_grad_(True)
        D.train().requires_grad_(True)
        img = G(z, c, force_fp32=True)
        torch.nn.functional.softplus(-D(img, c, force_fp32=True)).mean().backward()
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)

    return dict(G_forward=g_forward, G_D_fwd_bwd=g_d_train_step)


def timed_once(fn, device):
    if device.type == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--resolutions', default='32,64')
    args = ap.parse_args()
    device = torch.device(args.device)
    upstream_root = os.environ.get('STYLEFREQ_UPSTREAM')
    upstream = load_upstream_networks(upstream_root) if upstream_root else None

    result = dict(benchmark='networks', device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                  cpu=platform.processor() or platform.machine(), batch=args.batch, repeats=args.repeats,
                  statistic='median seconds per repetition / batch', upstream=upstream_root, results={})
    for res in [int(r) for r in args.resolutions.split(',')]:
        torch.manual_seed(0)
        contenders = {'stylefreq': build_pair(networks, res, device)}
        if upstream is not None:
            contenders['upstream'] = build_pair(upstream, res, device, weights_from=contenders['stylefreq'])
        z = torch.randn([args.batch, 512], device=device)
        c = torch.zeros([args.batch, 0], device=device)
        steps = {name: make_steps(G, D, z, c) for name, (G, D) in contenders.items()}

        entry = dict(G_params=sum(p.numel() for p in contenders['stylefreq'][0].parameters()),
                     D_params=sum(p.numel() for p in contenders['stylefreq'][1].parameters()))
        images = {name: s['G_forward']() for name, s in steps.items()}     # also the warm-up
        if upstream is not None:
            entry['G_forward_max_abs_diff'] = float((images['stylefreq'] - images['upstream']).abs().max())
        for name in steps:
            steps[name]['G_D_fwd_bwd']()                                    # warm-up
        times = {name: {kind: [] for kind in s} for name, s in steps.items()}
        for _ in range(args.repeats):
            for kind in ('G_forward', 'G_D_fwd_bwd'):
                for name in steps:                                         # alternate contenders
                    times[name][kind].append(timed_once(steps[name][kind], device))
        for name, per_kind in times.items():
            entry[name] = {f'{kind}_ms_per_img': round(1000 * statistics.median(t) / args.batch, 2)
                           for kind, t in per_kind.items()}
        if upstream is not None:
            entry['ratio'] = {kind: round(statistics.median(times['upstream'][kind]) /
                                          statistics.median(times['stylefreq'][kind]), 3)
                              for kind in ('G_forward', 'G_D_fwd_bwd')}
        result['results'][f'{res}px'] = entry
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
