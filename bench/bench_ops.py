"""Benchmark: stylefreq.ops against a naive evaluation of the same definitions.

For the FIR resampler and the resampling convolutions at the shapes StyleGAN2's layers use, times
forward and forward+backward (input gradient, as R1 and the generator loss need it) of

  * ours:  stylefreq.ops (stride instead of slicing, implicit padding, one zero canvas for
           upsampling, a transposed convolution for the up-conv);
  * naive: the definitions followed literally (zero insertion, explicit padding, a depthwise
           convolution at full resolution, slicing; the up-conv as a convolution of the
           zero-inserted image).

Also reports the largest absolute difference between the two outputs. Prints one JSON object;
compare runs on the same machine only.

    python bench/bench_ops.py [--device cpu] [--repeats 5] [--threads 1]
"""

import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from stylefreq.ops import conv2d_resample, upfirdn2d  # noqa: E402


def naive_upfirdn(x, f, up=1, down=1, pads=(0, 0, 0, 0), gain=1):
    """Zero insertion, F.pad, depthwise convolution at full resolution, slicing (true convolution)."""
    n, c, h, w = x.shape
    big = x.new_zeros([n, c, h * up, w * up])
    big[:, :, ::up, ::up] = x
    big = F.pad(big, list(pads))
    taps = f if f.ndim == 2 else torch.outer(f, f)
    kernel = (taps * gain).flip([0, 1]).to(x.dtype)
    out = F.conv2d(big, kernel.expand(c, 1, *kernel.shape).contiguous(), groups=c)
    return out[:, :, ::down, ::down]


def naive_conv2d_resample(x, w, f, up=1, down=1, padding=0, flip_weight=True):
    """The defining chain: FIR upsampling (zero insertion), the convolution, FIR downsampling."""
    fw = f.shape[0]
    p0 = p1 = padding
    if up > 1:
        p0, p1 = p0 + (fw + up - 1) // 2, p1 + (fw - up) // 2
    if down > 1:
        p0, p1 = p0 + (fw - down + 1) // 2, p1 + (fw - down) // 2
    ones = torch.ones([1, 1], device=x.device)
    x = naive_upfirdn(x, f if up > 1 else ones, up=up, pads=(p0, p1, p0, p1), gain=up * up)
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]))
    return naive_upfirdn(x, f, down=down) if down > 1 else x


def cases(device):
    """(name, ours, naive, input shape, weight shape or None). Shapes: batch 4, StyleGAN2 layers."""
    fir = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    sym6 = upfirdn2d.setup_filter([0.0154041093, 0.0034907121, -0.1179901111, -0.0483117426, 0.4910559419, 0.7876411410,
                                   0.3379294217, -0.0726375228, -0.0210602925, 0.0447249018, 0.0017677119, -0.0078007083],
                                  device=device)
    return [
        ('upsample2d img 64px', lambda x: upfirdn2d.upsample2d(x, fir),
         lambda x: naive_upfirdn(x, fir, up=2, pads=(2, 1, 2, 1), gain=4), [4, 3, 64, 64], None),
        ('downsample2d img 64px', lambda x: upfirdn2d.downsample2d(x, fir),
         lambda x: naive_upfirdn(x, fir, down=2, pads=(1, 1, 1, 1)), [4, 3, 64, 64], None),
        ('augment upsample2d 12 taps', lambda x: upfirdn2d.upsample2d(x, sym6),
         lambda x: naive_upfirdn(x, sym6, up=2, pads=(6, 5, 6, 5), gain=4), [4, 3, 64, 64], None),
        ('G up-conv FIR (pad 1, gain 4)', lambda x: upfirdn2d.upfirdn2d(x, fir, padding=1, gain=4),
         lambda x: naive_upfirdn(x, fir, pads=(1, 1, 1, 1), gain=4), [4, 256, 65, 65], None),
        ('D down-conv FIR (pad 2)', lambda x: upfirdn2d.upfirdn2d(x, fir, padding=2),
         lambda x: naive_upfirdn(x, fir, pads=(2, 2, 2, 2)), [4, 256, 64, 64], None),
        ('G conv0 up 3x3', lambda x, w: conv2d_resample.conv2d_resample(x, w, fir, up=2, padding=1, flip_weight=False),
         lambda x, w: naive_conv2d_resample(x, w, fir, up=2, padding=1, flip_weight=False), [4, 128, 32, 32], [128, 128, 3, 3]),
        ('D conv1 down 3x3', lambda x, w: conv2d_resample.conv2d_resample(x, w, fir, down=2, padding=1),
         lambda x, w: naive_conv2d_resample(x, w, fir, down=2, padding=1), [4, 128, 64, 64], [128, 128, 3, 3]),
        ('D skip 1x1 down', lambda x, w: conv2d_resample.conv2d_resample(x, w, fir, down=2),
         lambda x, w: naive_conv2d_resample(x, w, fir, down=2), [4, 128, 64, 64], [128, 128, 1, 1]),
        ('G skip 1x1 up', lambda x, w: conv2d_resample.conv2d_resample(x, w, fir, up=2, flip_weight=False),
         lambda x, w: naive_conv2d_resample(x, w, fir, up=2, flip_weight=False), [4, 128, 32, 32], [128, 128, 1, 1]),
    ]


def best_time(fn, repeats, device):
    fn()  # warm-up
    best = float('inf')
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    report = dict(benchmark='ops', device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                  cpu=platform.processor() or platform.machine(), unit='ms', results={})
    for name, ours, naive, x_shape, w_shape in cases(device):
        x = torch.randn(x_shape, generator=gen).to(device).requires_grad_(True)
        operands = [x] if w_shape is None else [x, (torch.randn(w_shape, generator=gen) / 30).to(device)]
        row = {}
        for label, fn in (('ours', ours), ('naive', naive)):
            def forward(fn=fn):
                with torch.no_grad():
                    return fn(*operands)

            def forward_backward(fn=fn):
                return torch.autograd.grad(fn(*operands).square().sum(), x)

            row[f'{label}_fwd'] = round(1000 * best_time(forward, args.repeats, device), 3)
            row[f'{label}_fwd_bwd'] = round(1000 * best_time(forward_backward, args.repeats, device), 3)
        with torch.no_grad():
            row['max_abs_diff'] = float((ours(*operands) - naive(*operands)).abs().max())
        row['speedup_fwd'] = round(row['naive_fwd'] / row['ours_fwd'], 2)
        row['speedup_fwd_bwd'] = round(row['naive_fwd_bwd'] / row['ours_fwd_bwd'], 2)
        report['results'][name] = row
    print(json.dumps(report, indent=2))


if __name__ == '__main__':
    main()
