"""Benchmark: generator forward, and G+D forward/backward, per image, at 32 and 64 px.

Networks are built as `train.py --cfg=auto` builds them (channel_base 16384, channel_max 512,
mapping 2 layers, fp16 flags on the top 4 resolutions, which run in float32 on CPU). Prints one
JSON object; compare runs on the same machine only.

    python bench/bench_networks.py [--device cpu] [--batch 4] [--repeats 3]
"""

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from training import networks  # noqa: E402


def build(res, device):
    G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=16384, channel_max=512, num_fp16_res=4, conv_clamp=256))
    D = networks.Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=16384, channel_max=512,
                               num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=4))
    return G.to(device), D.to(device)


def timed(fn, repeats, device):
    fn()  # warm-up
    best = float('inf')
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--resolutions', default='32,64')
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    result = dict(benchmark='networks', device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                  cpu=platform.processor() or platform.machine(), batch=args.batch, results={})
    for res in [int(r) for r in args.resolutions.split(',')]:
        G, D = build(res, device)
        z = torch.randn(args.batch, 512, device=device)

        def g_forward():
            with torch.no_grad():
                G.eval()(z, None, noise_mode='const')

        def g_d_train_step():
            G.train().requires_grad_(True)
            D.train().requires_grad_(True)
            img = G(z, None)
            loss = torch.nn.functional.softplus(-D(img, None)).mean()
            loss.backward()
            G.zero_grad(set_to_none=True)
            D.zero_grad(set_to_none=True)

        t_fwd = timed(g_forward, args.repeats, device)
        t_step = timed(g_d_train_step, args.repeats, device)
        result['results'][f'{res}px'] = dict(
            G_params=sum(p.numel() for p in G.parameters()), D_params=sum(p.numel() for p in D.parameters()),
            G_forward_ms_per_img=round(1000 * t_fwd / args.batch, 2),
            G_D_fwd_bwd_ms_per_img=round(1000 * t_step / args.batch, 2),
            fwd_bwd_over_fwd=round(t_step / t_fwd, 2))
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
