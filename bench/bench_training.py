"""Benchmark: training throughput of the real training loop, at 32 and 64 px, with and without ADA.

Each configuration runs `training.training_loop.training_loop` in its own process with the options
`train.py --cfg=auto` builds (batch 32 at 32 and 64 px, mapping 2 layers, R1 gamma and EMA from the
preset), with the networks scaled down by --cbase/--cmax so a CPU finishes in minutes. A tick is
exactly 16 iterations, so its time covers Gmain x16, Greg x4, Dmain x16 and Dreg x1: lazy
regularisation amortised as in a long run, plus data loading, EMA, the ADA pipe and the bookkeeping.
The first iteration (tick 0) is a warm-up and is not counted; the snapshot grids are shrunk to 8
images (setup cost only). Reports images/s (from Timing/sec_per_kimg), the per-phase mean seconds,
and the peak RSS of the process.

    python bench/bench_training.py [--cbase 4096] [--cmax 128] [--ticks 1] [--res 32,64] [--profile]

`--profile` runs the 32 px ADA configuration under cProfile and reports the top functions by
self time, and the share of time spent in stylefreq.ops, grid_sample and the data pipeline.
Prints one JSON object; compare runs on the same machine only.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
sys.path.insert(0, REPO)


def build_args(res, ada, cbase, cmax, batch, workers, ticks, run_dir):
    from training import config
    desc, args = config.training_options(data=f'builtin:blobs{res}', aug='fixed' if ada else 'noaug',
                                         p=0.3 if ada else None, cbase=cbase, cmax=cmax, batch=batch,
                                         workers=workers, metrics=[])
    args.run_dir = run_dir
    args.kimg_per_tick = 16 * args.batch_size / 1000       # one tick = 16 iterations (one Dreg cycle)
    args.total_kimg = args.batch_size / 1000 + ticks * args.kimg_per_tick
    args.image_snapshot_ticks = None
    args.network_snapshot_ticks = None
    return desc, args


def run_one(opts):
    """Child process: one configuration; prints its JSON record."""
    import numpy as np
    import torch
    from training import training_loop
    torch.set_num_threads(opts.threads or torch.get_num_threads())

    def small_grid(training_set, seed=0):
        # The 32x32-image snapshot grids (reals.png, fakes_init.png) are setup cost, not iteration
        # time; with them a 64 px configuration spends longer rendering than training.
        images, labels = zip(*[training_set[i] for i in range(8)])
        return (4, 2), np.stack(images), np.stack(labels)
    training_loop.setup_snapshot_image_grid = small_grid
    with tempfile.TemporaryDirectory() as run_dir:
        desc, args = build_args(opts.one_res, opts.one_ada, opts.cbase, opts.cmax, opts.batch, opts.workers,
                                opts.ticks, run_dir)
        profiler = None
        if opts.one_profile:
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            training_loop.training_loop(rank=0, **args)
        wall = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
        with open(os.path.join(run_dir, 'stats.jsonl')) as f:
            ticks = [json.loads(line) for line in f][1:]        # tick 0 = the warm-up iteration
    sec_per_kimg = sum(t['Timing/sec_per_kimg']['mean'] for t in ticks) / len(ticks)
    phases = {}
    for name in ('Gmain', 'Greg', 'Dmain', 'Dreg'):
        n = sum(t[f'Timing/{name}']['num'] for t in ticks if f'Timing/{name}' in t)
        s = sum(t[f'Timing/{name}']['num'] * t[f'Timing/{name}']['mean'] for t in ticks if f'Timing/{name}' in t)
        phases[name] = round(s / n, 4) if n else None
    record = dict(config=desc, resolution=opts.one_res, ada_p=0.3 if opts.one_ada else 0.0, batch=args.batch_size,
                  iterations_timed=16 * len(ticks), images_per_s=round(1000 / sec_per_kimg, 3),
                  sec_per_iteration=round(sec_per_kimg * args.batch_size / 1000, 4), phase_mean_sec=phases,
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  rss_at_last_tick_mb=round(ticks[-1]['Resources/cpu_mem_gb']['mean'] * 1024, 1),
                  wall_sec=round(wall, 1),
                  # Other processes on the machine distort CPU timings badly (threads spin-wait);
                  # trust a figure only when the load average stayed near the threads used.
                  loadavg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)])
    if profiler is not None:
        record['profile'] = summarize_profile(profiler)
    print(json.dumps(record))


def summarize_profile(profiler, top=15):
    import pstats
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        rows.append((tt, ct, nc, filename, line, func))
    rows.sort(reverse=True)

    def short(filename):
        filename = filename.replace(os.path.abspath(REPO) + os.sep, '')
        return filename if not filename.startswith('/') else os.path.basename(filename)

    hot = [dict(function=f'{short(fn)}:{line}({func})', self_sec=round(tt, 3), cum_sec=round(ct, 3), calls=nc)
           for tt, ct, nc, fn, line, func in rows[:top]]
    # Cumulative time of entry points that do not nest within each other.
    def cum(predicate):
        return round(sum(ct for (fn, line, func), (cc, nc, tt, ct, callers) in stats.stats.items()
                         if predicate(fn, func)), 3)
    groups = dict(
        total_sec=round(total, 3),
        upfirdn2d=cum(lambda fn, f: fn.endswith(os.path.join('ops', 'upfirdn2d.py')) and f == 'upfirdn2d'),
        conv2d_resample=cum(lambda fn, f: fn.endswith('conv2d_resample.py') and f == 'conv2d_resample'),
        bias_act=cum(lambda fn, f: fn.endswith(os.path.join('ops', 'bias_act.py')) and f == 'bias_act'),
        grid_sample=cum(lambda fn, f: fn.endswith(os.path.join('ops', 'grid_sample.py')) and f == 'grid_sample'),
        augment_pipe_forward=cum(lambda fn, f: fn.endswith(os.path.join('training', 'augment.py')) and f == 'forward'),
        autograd_backward=cum(lambda fn, f: fn == '~' and 'run_backward' in f),
        data_next_batch=cum(lambda fn, f: fn.endswith('dataloader.py') and f == '__next__'),
        optimizer_step=cum(lambda fn, f: fn.endswith('optimizer.py') and f == 'wrapper'),
    )
    return dict(groups_cum_sec=groups, top_self_time=hot)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cbase', type=int, default=4096, help='channel_base (auto preset: 16384)')
    parser.add_argument('--cmax', type=int, default=128, help='channel_max (auto preset: 512)')
    parser.add_argument('--batch', type=int, default=None, help='batch size [default: the auto preset, 32]')
    parser.add_argument('--workers', type=int, default=0, help='DataLoader workers [default: 0]')
    parser.add_argument('--ticks', type=int, default=1, help='timed ticks of 16 iterations per configuration')
    parser.add_argument('--res', default='32,64', help='comma-separated resolutions')
    parser.add_argument('--threads', type=int, default=None, help='torch threads [default: torch default]')
    parser.add_argument('--profile', action='store_true', help='also profile 32 px with ADA under cProfile')
    parser.add_argument('--one-res', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--one-ada', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--one-profile', type=int, default=0, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.one_res is not None:
        run_one(opts)
        return

    import torch
    configs = [(int(r), ada, 0) for r in opts.res.split(',') for ada in (0, 1)]
    if opts.profile:
        configs.append((int(opts.res.split(',')[0]), 1, 1))
    results = []
    for res, ada, prof in configs:
        cmd = [sys.executable, os.path.abspath(__file__), f'--cbase={opts.cbase}', f'--cmax={opts.cmax}',
               f'--workers={opts.workers}', f'--ticks={opts.ticks}', f'--one-res={res}', f'--one-ada={ada}',
               f'--one-profile={prof}']
        if opts.batch is not None:
            cmd.append(f'--batch={opts.batch}')
        if opts.threads is not None:
            cmd.append(f'--threads={opts.threads}')
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            results.append(dict(resolution=res, ada=ada, error=out.stderr.strip().splitlines()[-1:]))
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f'{res} px, ada {ada}: {results[-1]["images_per_s"]} images/s', file=sys.stderr, flush=True)
    print(json.dumps(dict(
        benchmark='training_loop throughput',
        device='cpu', torch=torch.__version__, python=platform.python_version(), cpu_count=os.cpu_count(),
        threads=opts.threads or torch.get_num_threads(), cbase=opts.cbase, cmax=opts.cmax, workers=opts.workers,
        note='images/s over whole 16-iteration ticks (lazy regularisation amortised); peak RSS per process',
        results=results), indent=2))


if __name__ == '__main__':
    main()
