"""Benchmark: specdisc time per 1,000 images at 64 and 256 px.

Two figures per resolution:
- `spectra_s_per_1k`: the spectral work alone (uint8 batch -> grayscale, Hann window, FFT, power,
  batch sum; `stylefreq.specmetrics.batch_power_sum`) on random images already in memory;
- `metric_s_per_1k`: the whole `specdisc` metric through `calc_metric`, real and "generated" sides
  both read from the procedural dataset `builtin:blobs<R>` (512 images each, decoding included, no
  generator, no statistics cache), per 1,000 images processed (real + generated).
Prints one JSON object; compare runs on the same machine only.

    python bench/bench_metrics.py [--device cpu] [--sizes 64,256] [--batch 64] [--repeats 3] [--threads N]

On a shared machine the load average (reported) matters a lot: with other work running, two
spinning OpenMP threads can be several times slower than one (try --threads=1).
"""

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from metrics import metric_main  # noqa: E402
from stylefreq import specmetrics  # noqa: E402


def time_spectra(res, batch, repeats, device):
    images = torch.randint(0, 256, [batch, 3, res, res], dtype=torch.uint8, device=device)
    specmetrics.batch_power_sum(images)   # warm-up
    best = float('inf')
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        specmetrics.batch_power_sum(images)
        if device.type == 'cuda':
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best / batch * 1000


def time_metric(res, repeats, device):
    kwargs = dict(class_name='training.dataset.ImageFolderDataset', path=f'builtin:blobs{res}')
    best, n = float('inf'), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = metric_main.calc_metric('specdisc1k', dataset_kwargs=kwargs, gen_dataset_kwargs=kwargs, device=device,
                                         cache=False)
        best = min(best, time.perf_counter() - t0)
        n = 2 * 512
        assert abs(result.results['specdisc1k_all']) < 1e-9
    return best / n * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--sizes', default='64,256')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads [default: torch\'s]')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = dict(benchmark='specdisc', device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
               cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), batch=args.batch,
               loadavg_1min=round(os.getloadavg()[0], 2) if hasattr(os, 'getloadavg') else None, results={})
    for res in [int(s) for s in args.sizes.split(',')]:
        out['results'][f'{res}px'] = dict(
            spectra_s_per_1k=round(time_spectra(res, args.batch, args.repeats, device), 4),
            metric_s_per_1k=round(time_metric(res, max(1, args.repeats - 1), device), 4),
        )
    print(json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
