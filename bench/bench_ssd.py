"""Benchmark: SSD-GAN's spectral feature and the cost of the spectral branch in a discriminator step.

(a) phi(x) (`stylefreq.spectral.ssd_feature`) on a batch of 64 RGB 128x128 images, against a
    NumPy implementation of the official algorithm that works one image at a time, as the authors'
    get_fft_feature.py does after its GPU->CPU copy (gray, np.fft.fft2, ln|F| with the official
    epsilons, quadrant swap, np.indices + floor radius + np.bincount, bins [1:-2], min-max).
    Also reported: the batched real FFT alone, a floor for any FFT-based implementation.
(b) One discriminator forward+backward on a 64 px batch, plain vs wrapped in
    `stylefreq.ssd.SSDDiscriminator` ('official': logit plus C's hinge loss, as the D step runs it;
    'joint'), for the parameter gradients of a D step and for the input gradient a G step needs.
    The spatial D is built as `train.py --cfg=auto` builds it at 64 px (channel_base 16384,
    channel_max 512, fp16 flags on the top 4 resolutions, which run in float32 on the CPU), unless
    --cbase/--cmax scale it down; the JSON says which. Overhead is given twice: measured (wrapped
    step / plain step - 1, which load from other processes makes noisy) and isolated (the branch's
    own work, timed alone, relative to the plain step).

Timings are the best of --repeats runs, with the variants interleaved round by round so that load
from other processes hits them alike. Prints one JSON object; compare runs on one machine only.

    python bench/bench_ssd.py [--device cpu] [--repeats 3] [--d-batch 4] [--threads N] [--cbase 2048 --cmax 128]
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from stylefreq import spectral  # noqa: E402
from stylefreq.ssd import SSDDiscriminator  # noqa: E402
from training import networks  # noqa: E402


def numpy_official_feature(images):
    """The official algorithm in NumPy, one image at a time (float64, NumPy's FFT)."""
    out = []
    for img in images:
        gray = 0.2989 * img[0] + 0.5870 * img[1] + 0.1140 * img[2] if img.shape[0] == 3 else img[0]
        f = np.fft.fft2(gray)
        mag = np.log(np.sqrt((f.real + 1e-8) ** 2 + (f.imag + 1e-8) ** 2 + 1e-10) + 1e-10)
        H, W = mag.shape
        h, w = H // 2, W // 2
        shifted = np.empty_like(mag)
        shifted[:h, :w], shifted[h:, w:] = mag[h:, w:], mag[:h, :w]
        shifted[:h, w:], shifted[h:, :w] = mag[h:, :w], mag[:h, w:]
        y, x = np.indices(shifted.shape)
        r = np.sqrt((x - h) ** 2 + (y - w) ** 2).astype(int)
        prof = (np.bincount(r.ravel(), shifted.ravel()) / (np.bincount(r.ravel()) + 1e-10))[1:-2]
        out.append((prof - prof.min()) / (prof.max() - prof.min()))
    return np.stack(out)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def interleaved_best(fns, repeats, device):
    """Best wall time of each callable; one call of each per round, after one warm-up round."""
    best = {name: float('inf') for name in fns}
    for round_idx in range(repeats + 1):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if round_idx > 0:
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_feature(device, batch, res, repeats):
    x = (torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    x_np = x.cpu().double().numpy()
    gray = spectral.to_grayscale(x)
    x_grad = x.clone().requires_grad_(True)

    def torch_nograd():
        with torch.no_grad():
            spectral.ssd_feature(x)

    def torch_grad():
        spectral.ssd_feature(x_grad).sum().backward()

    fns = dict(numpy_per_image=lambda: numpy_official_feature(x_np), torch_batched=torch_nograd,
               torch_batched_fwd_bwd=torch_grad, rfft2_only=lambda: torch.fft.rfft2(gray))
    best = interleaved_best(fns, repeats, device)
    err = float(np.abs(spectral.ssd_feature(x.double()).cpu().numpy() - numpy_official_feature(x_np)).max())
    return dict(
        batch=batch, shape=[3, res, res], features=spectral.ssd_feature_size(res), max_abs_diff_float64=err,
        ms={k: round(v * 1e3, 3) for k, v in best.items()},
        images_per_s={k: round(batch / v, 1) for k, v in best.items() if k != 'rfft2_only'},
        speedup_vs_numpy=round(best['numpy_per_image'] / best['torch_batched'], 1),
        speedup_bound_by_fft=round(best['numpy_per_image'] / best['rfft2_only'], 1))


def bench_discriminator(device, batch, res, cbase, cmax, repeats):
    spatial_kwargs = dict(class_name='training.networks.Discriminator', channel_base=cbase, channel_max=cmax,
                          num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=4))
    common = dict(c_dim=0, img_resolution=res, img_channels=3)
    torch.manual_seed(0)
    plain = networks.Discriminator(**common, **{k: v for k, v in spatial_kwargs.items() if k != 'class_name'})
    nets = dict(plain=plain)
    for mode in ('official', 'joint'):
        ssd = SSDDiscriminator(**common, spatial_kwargs=spatial_kwargs, mode=mode)
        ssd.spatial.load_state_dict(plain.state_dict())
        nets[mode] = ssd
    for net in nets.values():
        net.to(device).train().requires_grad_(True)
    x = (torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(device)

    def d_step(net):
        def run():
            loss = torch.nn.functional.softplus(-net(x, None)).mean()
            aux = getattr(net, 'aux_loss', None)
            aux = aux(x, None, real=True) if aux is not None else None
            if aux is not None:
                loss = loss + aux.mean()
            loss.backward()
            net.zero_grad(set_to_none=True)
        return run

    def input_grad(net):
        def run():
            xg = x.detach().requires_grad_(True)
            torch.autograd.grad(torch.nn.functional.softplus(-net(xg, None)).sum(), [xg])
        return run

    # The branch's own work, isolated (what the wrapper adds to the plain D's work above).
    official, joint = nets['official'], nets['joint']

    def official_branch_D_step():     # sg(C(phi(x))) in forward, then C's hinge loss and its backward
        with torch.no_grad():
            official.spectral_logits(x)
        official.aux_loss(x, None, real=True).mean().backward()
        official.zero_grad(set_to_none=True)

    def joint_branch_D_step():
        joint.spectral_logits(x).mean().backward()
        joint.zero_grad(set_to_none=True)

    def joint_branch_input_grad():
        xg = x.detach().requires_grad_(True)
        torch.autograd.grad(joint.spectral_logits(xg).sum(), [xg])

    def official_branch_input_grad():
        with torch.no_grad():
            official.spectral_logits(x)

    fns = {f'{name}_D_step': d_step(net) for name, net in nets.items()}
    fns.update({f'{name}_input_grad': input_grad(net) for name, net in nets.items()})
    fns.update(official_branch_D_step=official_branch_D_step, joint_branch_D_step=joint_branch_D_step,
               official_branch_input_grad=official_branch_input_grad, joint_branch_input_grad=joint_branch_input_grad)
    best = interleaved_best(fns, repeats, device)
    overhead = {}
    for kind in ('D_step', 'input_grad'):
        base = best[f'plain_{kind}']
        for mode in ('official', 'joint'):
            # Whole wrapped step vs plain step (noisy under load: two large numbers subtracted) ...
            overhead[f'{mode}_{kind}_pct_measured'] = round(100 * (best[f'{mode}_{kind}'] / base - 1), 2)
            # ... and the branch's isolated cost relative to the plain step (robust to load).
            overhead[f'{mode}_{kind}_pct_isolated'] = round(100 * best[f'{mode}_branch_{kind}'] / base, 3)
    auto = (cbase, cmax) == (16384, 512)
    return dict(
        resolution=res, batch=batch, spatial_D=('train.py --cfg=auto at 64 px' if auto and res == 64 else
                                                f'scaled down: channel_base {cbase}, channel_max {cmax}'),
        D_params=sum(p.numel() for p in plain.parameters()),
        classifier_params=sum(p.numel() for p in nets['official'].classifier.parameters()),
        ms={k: round(v * 1e3, 2) for k, v in best.items()}, overhead=overhead)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--threads', type=int, default=None, help='torch.set_num_threads [default: torch default]')
    ap.add_argument('--feature-batch', type=int, default=64)
    ap.add_argument('--feature-res', type=int, default=128)
    ap.add_argument('--d-batch', type=int, default=4)
    ap.add_argument('--d-res', type=int, default=64)
    ap.add_argument('--cbase', type=int, default=16384)
    ap.add_argument('--cmax', type=int, default=512)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = dict(benchmark='ssd', device=str(device), torch=torch.__version__, numpy=np.__version__,
                  threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                  load_avg=[round(v, 2) for v in os.getloadavg()] if hasattr(os, 'getloadavg') else None)
    result['feature'] = bench_feature(device, args.feature_batch, args.feature_res, args.repeats)
    result['discriminator'] = bench_discriminator(device, args.d_batch, args.d_res, args.cbase, args.cmax,
                                                  args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
