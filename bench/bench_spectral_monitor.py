"""Cost of the spectral monitor against the training step it rides on. Prints JSON.

    python bench/bench_spectral_monitor.py [--resolution 64] [--batch 8] [--reps 5]

A training step here is the G main and D main phases of StyleGAN2Loss on train.py's --cfg=auto
networks for the resolution (what every step of a run does; the lazy regularisation phases come on
top, so the real share is smaller). The monitor's part is `observe` on the step's generated batch,
plus its once-per-tick reduction spread over the steps of a tick (kimg_per_tick=4). Steps with and
without the monitor alternate, and the ratio is taken within one run.
"""

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from stylefreq.kwargs import construct_class_by_name
from training import config
from training.spectral_monitor import SpectralMonitor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--resolution', type=int, default=64)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--reps', type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    torch.manual_seed(0)
    R, N = args.resolution, args.batch
    _, options = config.training_options(data=f'builtin:blobs{R}', batch=N)
    common = dict(c_dim=0, img_resolution=R, img_channels=3)
    G = construct_class_by_name(**options.G_kwargs, **common).train().requires_grad_(False)
    D = construct_class_by_name(**options.D_kwargs, **common).train().requires_grad_(False)
    loss = construct_class_by_name(device=torch.device('cpu'), G_mapping=G.mapping, G_synthesis=G.synthesis, D=D,
                                   **options.loss_kwargs)
    real_pbar = np.random.RandomState(0).rand(R, R) + 0.5
    monitor = SpectralMonitor(real_pbar, 'cpu')
    reals = torch.rand([N, 3, R, R]) * 2 - 1
    c = torch.zeros([N, 0])
    steps_per_tick = 4000 // N

    def step(with_monitor):
        loss.observe_fakes = monitor.observe if with_monitor else None
        for phase, net in (('Gmain', G), ('Dmain', D)):
            net.requires_grad_(True)
            loss.accumulate_gradients(phase=phase, real_img=reals, real_c=c, gen_z=torch.randn([N, G.z_dim]),
                                      gen_c=c, gain=1)
            net.requires_grad_(False)

    step(True)                                                   # warm-up
    plain, monitored, observe_only = [], [], []
    for _ in range(args.reps):
        t = time.perf_counter()
        step(False)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        step(True)
        monitored.append(time.perf_counter() - t)
        images = torch.rand([N, 3, R, R]) * 2 - 1
        t = time.perf_counter()
        monitor.observe(images)
        observe_only.append(time.perf_counter() - t)
    t = time.perf_counter()
    monitor.finish_tick()
    reduce_sec = time.perf_counter() - t
    step_sec = statistics.median(plain)
    monitor_sec = statistics.median(observe_only) + reduce_sec / steps_per_tick
    print(json.dumps(dict(
        bench='spectral_monitor', resolution=R, batch=N, reps=args.reps, threads=torch.get_num_threads(),
        machine=platform.machine(), load_average=os.getloadavg(), torch=torch.__version__,
        step_ms_median=round(step_sec * 1e3, 2), step_with_monitor_ms_median=round(statistics.median(monitored) * 1e3, 2),
        observe_ms_median=round(statistics.median(observe_only) * 1e3, 3), tick_reduce_ms=round(reduce_sec * 1e3, 3),
        monitor_share_of_step=round(monitor_sec / step_sec, 5),
    ), indent=1))


if __name__ == '__main__':
    main()
