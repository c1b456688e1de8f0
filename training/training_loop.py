"""The training loop: one process's share of a StyleGAN2-ADA run.

    training_loop(rank=0, device='cpu', **options)    # options: training.config's dict

Sections, in the order an iteration meets them:
  setup        seeds, networks, augmentation, phases, resume, image stream, sample grids, logs
  accumulate   each phase due now runs its loss over the rounds of batch_gpu images
  update       one flat all-reduce of the phase's gradients (non-finite values counted and zeroed),
               then the optimizer step
  EMA          G_ema follows G with a half-life of ema_kimg (ramped up over the first images)
  ADA          every ada_interval iterations p moves with the sign of D's outputs on reals
  maintenance  at the end of a tick: statistics, console line, image grid, snapshot, metrics, logs

Every process trains on its own stride of each global batch (training.resume.ImageStream); networks
start from rank 0's weights and stay equal because every rank applies the same averaged gradients.
There is no DistributedDataParallel. Only rank 0 prints and writes files.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import time

import numpy as np
import PIL.Image
import torch

from metrics import metric_main
from stylefreq import checkpoint, distributed, files
from stylefreq.kwargs import EasyDict, construct_class_by_name
from stylefreq.progress import format_time
from training import resume, training_stats
from training.spectral_monitor import SpectralMonitor, real_mean_spectrum, save_curve

# ---------------------------------------------------------------------------------------------------
# Sample grids (reals.png, fakes_init.png, fakes<kimg>.png).


def setup_snapshot_image_grid(training_set, seed=0):
    """(grid_size, images, labels) of the sample grid: upstream's size rule (7680 // W columns clipped
    to [7, 32], 4320 // H rows clipped to [4, 32]), a seeded pick of images; with labels, each row
    shows one class."""
    _channels, height, width = training_set.image_shape
    columns, rows = int(np.clip(7680 // width, 7, 32)), int(np.clip(4320 // height, 4, 32))
    shuffled = np.random.RandomState(seed).permutation(len(training_set))
    if training_set.has_labels:
        classes = {}
        for index in shuffled:
            classes.setdefault(tuple(training_set.get_label(index).tolist()), []).append(index)
        members = [classes[key] for key in sorted(classes, key=lambda label: (np.argmax(label), label))]
        picks = []
        for row in range(rows):
            group = members[row % len(members)]
            first = row // len(members) * columns          # repeated classes show further images
            picks += [group[(first + col) % len(group)] for col in range(columns)]
    else:
        picks = shuffled[np.arange(columns * rows) % len(shuffled)]
    pairs = [training_set[int(index)] for index in picks]
    return (columns, rows), np.stack([image for image, _ in pairs]), np.stack([label for _, label in pairs])


def grid_latents(num, z_dim, seed=0):
    """The fixed latents the fakes grids are rendered from (their own generator: drawing them does
    not move the training random stream)."""
    return torch.randn([num, z_dim], generator=torch.Generator().manual_seed(int(seed)))


@torch.no_grad()
def render_grid(G, grid_z, grid_c):
    """G's images for the grid latents (chunks of z and c), constant noise, as float32 NCHW numpy."""
    return torch.cat([G(z=z, c=c, noise_mode='const').float().cpu() for z, c in zip(grid_z, grid_c)]).numpy()


def save_image_grid(images, path, drange, grid_size):
    """Write NCHW images with values in `drange` as one PNG of grid_size = (columns, rows), atomically."""
    low, high = drange
    scaled = (np.asarray(images, dtype=np.float32) - low) * (255 / (high - low))
    pixels = np.rint(scaled).clip(0, 255).astype(np.uint8)
    columns, rows = grid_size
    count, channels, height, width = pixels.shape
    if count != columns * rows or channels not in (1, 3):
        raise ValueError(f'save_image_grid: {count} images of {channels} channels do not fill a {columns}x{rows} grid')
    sheet = pixels.reshape(rows, columns, channels, height, width).transpose(0, 3, 1, 4, 2)
    sheet = sheet.reshape(rows * height, columns * width, channels)
    picture = PIL.Image.fromarray(sheet[:, :, 0], 'L') if channels == 1 else PIL.Image.fromarray(sheet, 'RGB')
    encoded = io.BytesIO()
    picture.save(encoded, format='png')
    files.write_bytes(path, encoded.getvalue())


# ---------------------------------------------------------------------------------------------------
# Phases: accumulate and update.

def average_gradients(params) -> torch.Tensor:
    """Average the gradients of `params` over all processes with one flat all-reduce.

    A parameter without a gradient counts as zeros (every process must pass the same tensors, and
    the optimizer then treats it the same in one process as in many). Non-finite values are
    replaced by 0; returns how many there were, as a device tensor (nothing waits for the device).
    """
    params = list(params)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not params:
        return torch.zeros([], dtype=torch.int64)
    flat = torch.cat([p.grad.flatten() for p in params])
    distributed.all_reduce_mean_([flat])
    invalid = ~torch.isfinite(flat)
    flat.masked_fill_(invalid, 0)
    for p, part in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(part.view_as(p.grad))
    return invalid.sum()


class _Phase:
    """One optimisation phase (Gmain, Greg, Gboth, Dmain, Dreg, Dboth), due when step % interval == 0."""

    def __init__(self, name, module, opt, interval, device):
        self.name, self.module, self.opt, self.interval = name, module, opt, interval
        self.zeroed = torch.zeros([], dtype=torch.int64, device=device)   # non-finite gradient values this tick
        self.laps = []                                                     # (start, end) clock marks this tick

    def train(self, loss, rounds):
        """Accumulate the loss's gradients over the rounds, average them over processes, step.

        Rounds add up (each round's loss is a mean times the phase's gain), as upstream's do.
        """
        self.opt.zero_grad(set_to_none=True)
        self.module.requires_grad_(True)
        for real, real_label, z, label in rounds:
            loss.accumulate_gradients(phase=self.name, real_img=real, real_c=real_label, gen_z=z, gen_c=label,
                                      gain=self.interval)
        self.module.requires_grad_(False)
        self.zeroed += average_gradients(self.module.parameters())
        self.opt.step()


def _make_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval, device):
    made = []
    for letter, module, opt_kwargs, interval in (('G', G, G_opt_kwargs, G_reg_interval),
                                                 ('D', D, D_opt_kwargs, D_reg_interval)):
        settings = dict(opt_kwargs)
        if interval is None:
            made.append(_Phase(letter + 'both', module, construct_class_by_name(module.parameters(), **settings),
                               1, device))
            continue
        # Lazy regularisation: the reg phase runs every `interval` iterations with its loss times
        # `interval`. Main and reg steps share one optimizer, slowed by interval / (interval + 1)
        # so that both together move about as far as one step per iteration would.
        share = interval / (interval + 1)
        settings['lr'] *= share
        if 'betas' in settings:
            settings['betas'] = [beta ** share for beta in settings['betas']]
        shared = construct_class_by_name(module.parameters(), **settings)
        made += [_Phase(letter + 'main', module, shared, 1, device),
                 _Phase(letter + 'reg', module, shared, interval, device)]
    return made


@torch.no_grad()
def _follow(G_ema, G, keep):
    """G_ema <- keep * G_ema + (1 - keep) * G for parameters; buffers are copied."""
    for mine, theirs in zip(G_ema.parameters(), G.parameters()):
        mine.lerp_(theirs, 1 - keep)
    for mine, theirs in zip(G_ema.buffers(), G.buffers()):
        mine.copy_(theirs)


class _Clock:
    """Phase timings read at the tick: CUDA events on a GPU (no synchronisation per phase), wall time otherwise."""

    def __init__(self, device):
        self.device = device

    def mark(self):
        if self.device.type != 'cuda':
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def seconds(self, start, end) -> float:
        if self.device.type != 'cuda':
            return end - start
        end.synchronize()
        return start.elapsed_time(end) / 1000


# ---------------------------------------------------------------------------------------------------
# Maintenance helpers.

def _resident_memory_gb() -> float:
    try:                    # Linux: current resident set
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 30
    except (OSError, ValueError, IndexError, AttributeError):
        import resource     # elsewhere: the peak, in bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2 ** 30 if os.uname().sysname == 'Darwin' else peak / 2 ** 20


class _RunLogs:
    """stats.jsonl (one line per tick) and TensorBoard events when tensorboard is installed; rank 0 only."""

    def __init__(self, run_dir, say):
        self.jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at', encoding='utf-8')
        self.events = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            say('TensorBoard is not installed: statistics go to stats.jsonl only')
        else:
            self.events = SummaryWriter(run_dir)

    def write(self, stats, results, kimg, elapsed):
        self.jsonl.write(json.dumps(dict(stats, timestamp=time.time())) + '\n')
        self.jsonl.flush()
        if self.events is None:
            return
        scalars = {name: entry.mean for name, entry in stats.items()}
        scalars.update({f'Metrics/{key}': value for result in results for key, value in result.results.items()})
        for name, value in scalars.items():
            self.events.add_scalar(name, value, global_step=int(kimg), walltime=elapsed)
        self.events.flush()

    def close(self):
        self.jsonl.close()
        if self.events is not None:
            self.events.close()


def _silent(*_args, **_kwargs):
    pass


# ---------------------------------------------------------------------------------------------------
# The loop.

def training_loop(
    run_dir='.', training_set_kwargs={}, data_loader_kwargs={}, G_kwargs={}, D_kwargs={}, G_opt_kwargs={},
    D_opt_kwargs={}, augment_kwargs=None, loss_kwargs={}, metrics=[], random_seed=0, num_gpus=1, rank=0,
    batch_size=4, batch_gpu=4, ema_kimg=10, ema_rampup=None, G_reg_interval=4, D_reg_interval=16, augment_p=0,
    ada_target=None, ada_interval=4, ada_kimg=500, total_kimg=25000, kimg_per_tick=4, image_snapshot_ticks=50,
    network_snapshot_ticks=50, resume_pkl=None, resume_progress=False, cudnn_benchmark=True, allow_tf32=False,
    spectral_monitor=False, abort_fn=None, progress_fn=None, tick_fn=None, device=None,
):
    """Train as the options say. `progress_fn(kimg, total_kimg)` is called before the first
    iteration and at every tick, `abort_fn()` at every tick (True ends the run after a snapshot),
    `tick_fn(report)` at every tick on every process (see the maintenance section)."""
    # --- setup ----------------------------------------------------------------------------------
    launched = time.time()
    device = distributed.default_device(rank) if device is None else torch.device(device)
    if (distributed.get_world_size(), distributed.get_rank()) != (num_gpus, rank):
        raise ValueError(f'training_loop: num_gpus={num_gpus}, rank={rank}, but this process is rank '
                         f'{distributed.get_rank()} of {distributed.get_world_size()}')
    if batch_size % (batch_gpu * num_gpus) != 0:
        raise ValueError(f'training_loop: batch_size={batch_size} is not a multiple of batch_gpu * num_gpus')
    leader = rank == 0
    say = print if leader else _silent
    notify = progress_fn or _silent
    process_seed = random_seed * num_gpus + rank
    torch.manual_seed(process_seed)
    label_draws = np.random.RandomState(process_seed % 2 ** 32)
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(allow_tf32)
    end_nimg = round(total_kimg * 1000, 6)
    nimg_per_tick = round(kimg_per_tick * 1000, 6)

    say('Loading training set...')
    training_set = construct_class_by_name(**training_set_kwargs)
    say(f'{len(training_set)} images of shape {training_set.image_shape}, label shape {training_set.label_shape}')

    say('Constructing networks...')
    common = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                  img_channels=training_set.num_channels)
    G = construct_class_by_name(**G_kwargs, **common).train().requires_grad_(False).to(device)
    D = construct_class_by_name(**D_kwargs, **common).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    say(f'G: {sum(t.numel() for t in G.parameters()):,} parameters, {G.num_ws} ws; '
        f'D: {sum(t.numel() for t in D.parameters()):,} parameters')
    augment_pipe = real_signs = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        augment_pipe = construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.fill_(float(augment_p))
        real_signs = None if ada_target is None else training_stats.Collector(regex='Loss/signs/real')

    phases = _make_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval, device)
    optimizers = {phase.name[0]: phase.opt for phase in phases}
    loss = construct_class_by_name(device=device, G_mapping=G.mapping, G_synthesis=G.synthesis, D=D,
                                   augment_pipe=augment_pipe, **loss_kwargs)

    # Resume: rank 0 reads the checkpoint (a bad one stops every process with its message); the
    # progress record then reaches every process, and the weights do with the broadcast below.
    progress = None
    if resume_pkl is not None:
        def restore():
            say(f'Resuming from {resume_pkl}')
            data = resume.load_snapshot(resume_pkl)
            resume.restore_networks(data, resume_pkl, dict(G=G, D=D, G_ema=G_ema), training_set.image_shape)
            if not resume_progress:
                return None
            found = resume.resumable_progress(data)
            if found is None:
                raise resume.ResumeError(f'{resume_pkl} carries no training progress to continue from')
            if augment_pipe is not None and data.get('augment_pipe') is not None:
                resume.copy_weights(data['augment_pipe'], augment_pipe, 'augment_pipe')
            for letter, opt in optimizers.items():
                resume.load_optimizer_state(opt, found[f'{letter}_opt'], f'{letter}_opt', resume_pkl)
            return found
        progress = resume.on_rank0(restore)
        if resume_progress:
            progress = distributed.broadcast_object(progress)
            if not leader:                  # rank 0 loaded its optimizers while checking the snapshot
                for letter, opt in optimizers.items():
                    resume.load_optimizer_state(opt, progress[f'{letter}_opt'], f'{letter}_opt', resume_pkl)
    if distributed.is_distributed():
        say(f'Distributing across {num_gpus} processes...')
    for module in (G, D, G_ema, augment_pipe):
        distributed.broadcast_module_(module)
    seen, tick, step = (0, 0, 0) if progress is None else \
        (int(progress['cur_nimg']), int(progress['cur_tick']), int(progress['batch_idx']))
    if progress is not None and progress['pl_mean'] is not None and hasattr(loss, 'pl_mean'):
        loss.pl_mean.fill_(float(progress['pl_mean']))
    if seen >= end_nimg:
        say(f'Nothing to do: the run has seen {seen / 1000:g} kimg of its {total_kimg} (raise --kimg)')
        return

    # The image stream continues at the images seen; each process takes its stride of every batch.
    per_process = batch_size // num_gpus
    stream = resume.ImageStream(len(training_set), rank=rank, num_procs=num_gpus, seed=random_seed, start=seen)
    loader_kwargs = dict(data_loader_kwargs)
    loader_kwargs['pin_memory'] = bool(loader_kwargs.get('pin_memory')) and device.type == 'cuda'
    if not loader_kwargs.get('num_workers'):
        loader_kwargs.pop('prefetch_factor', None)
    batches = iter(torch.utils.data.DataLoader(training_set, sampler=stream, batch_size=per_process, **loader_kwargs))

    grid_size = grid_z = grid_labels = None
    if leader:
        say('Exporting sample images...')
        grid_size, grid_reals, labels = setup_snapshot_image_grid(training_set)
        grid_z = grid_latents(len(labels), G.z_dim, random_seed).to(device).split(batch_gpu)
        grid_labels = torch.from_numpy(labels).to(device).split(batch_gpu)
        for name, draw, drange in (('reals.png', lambda: grid_reals, [0, 255]),
                                   ('fakes_init.png', lambda: render_grid(G_ema, grid_z, grid_labels), [-1, 1])):
            if not os.path.exists(os.path.join(run_dir, name)):      # a continued run keeps its originals
                save_image_grid(draw(), os.path.join(run_dir, name), drange=drange, grid_size=grid_size)

    monitor = None
    if spectral_monitor:
        say('Measuring the spectrum of the training images...')
        monitor = SpectralMonitor(real_mean_spectrum(training_set_kwargs, num_gpus, rank, device), device)
        if hasattr(loss, 'observe_fakes'):
            loss.observe_fakes = monitor.observe
        else:
            say(f'warning: {type(loss).__name__} has no observe_fakes hook; the spectral monitor sees no images')

    tick_stats = training_stats.Collector()
    logs = _RunLogs(run_dir, say) if leader else None
    say(f'Training for {total_kimg} kimg...\n')
    clock = _Clock(device)
    tick_began_nimg, tick_began = seen, time.time()
    maintenance_sec = tick_began - launched
    notify(seen // 1000, total_kimg)

    while True:
        # --- accumulate and update ----------------------------------------------------------------
        reals, real_labels = next(batches)
        reals = (reals.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
        real_labels = real_labels.to(device).split(batch_gpu)
        for phase in [p for p in phases if step % p.interval == 0]:
            started = clock.mark()
            latents = torch.randn([per_process, G.z_dim], device=device).split(batch_gpu)
            drawn = label_draws.randint(len(training_set), size=per_process)
            labels = torch.from_numpy(np.stack([training_set.get_label(i) for i in drawn])).to(device)
            phase.train(loss, zip(reals, real_labels, latents, labels.split(batch_gpu)))
            phase.laps.append((started, clock.mark()))

        # --- EMA ----------------------------------------------------------------------------------
        half_life = ema_kimg * 1000 if ema_rampup is None else min(ema_kimg * 1000, seen * ema_rampup)
        _follow(G_ema, G, keep=0.5 ** (batch_size / max(half_life, 1e-8)))
        seen, step = seen + batch_size, step + 1

        # --- ADA ----------------------------------------------------------------------------------
        if real_signs is not None and step % ada_interval == 0:
            real_signs.update()
            mean_sign = real_signs['Loss/signs/real']
            if math.isfinite(mean_sign):
                direction = np.sign(mean_sign - ada_target)
                augment_pipe.p.add_(float(direction * batch_size * ada_interval / (ada_kimg * 1000))).clamp_(min=0)

        done = seen >= end_nimg
        if not done and tick != 0 and seen < tick_began_nimg + nimg_per_tick:
            continue

        # --- maintenance --------------------------------------------------------------------------
        tick_ended = time.time()
        elapsed, tick_sec = tick_ended - launched, tick_ended - tick_began
        sec_per_kimg = tick_sec / max(seen - tick_began_nimg, 1) * 1000
        cpu_gb = _resident_memory_gb()
        gpu_gb = 0.0
        if device.type == 'cuda':
            gpu_gb = torch.cuda.max_memory_allocated(device) / 2 ** 30
            torch.cuda.reset_peak_memory_stats(device)
        p_now = 0.0 if augment_pipe is None else float(augment_pipe.p)
        for name, value in (('Progress/tick', tick), ('Progress/kimg', seen / 1000), ('Progress/augment', p_now),
                            ('Timing/total_sec', elapsed), ('Timing/sec_per_tick', tick_sec),
                            ('Timing/sec_per_kimg', sec_per_kimg), ('Timing/maintenance_sec', maintenance_sec),
                            ('Timing/total_hours', elapsed / 3600), ('Timing/total_days', elapsed / 86400),
                            ('Resources/cpu_mem_gb', cpu_gb), ('Resources/peak_gpu_mem_gb', gpu_gb)):
            training_stats.report0(name, value)
        for phase in phases:
            for lap in phase.laps:
                training_stats.report0(f'Timing/{phase.name}', clock.seconds(*lap))
            phase.laps.clear()
            zeroed = int(phase.zeroed)
            phase.zeroed.zero_()
            training_stats.report0(f'Health/nonfinite_grads/{phase.name}', zeroed)
            if zeroed:
                say(f'warning: {zeroed} non-finite gradient values in phase {phase.name} at kimg {seen / 1000:.1f} '
                    f'were replaced by 0')
        if monitor is not None:
            monitor.finish_tick()
        fields = (('tick', f'{tick:<5d}'), ('kimg', f'{seen / 1000:<8.1f}'), ('time', f'{format_time(elapsed):<12s}'),
                  ('sec/tick', f'{tick_sec:<7.1f}'), ('sec/kimg', f'{sec_per_kimg:<7.2f}'),
                  ('maintenance', f'{maintenance_sec:<6.1f}'), ('cpumem', f'{cpu_gb:<6.2f}'),
                  ('gpumem', f'{gpu_gb:<6.2f}'), ('augment', f'{p_now:.3f}'))
        say(' '.join(f'{label} {value}' for label, value in fields)
            + ('' if monitor is None else '   ' + monitor.tick_summary()))
        if not done and abort_fn is not None and abort_fn():
            done = True
            say('Aborting...')
        if monitor is not None and (notice := monitor.notice(done)):
            say(notice)

        def due(every):
            return every is not None and (done or tick % every == 0)

        # Image grid.
        tick_images = None
        if leader and due(image_snapshot_ticks):
            tick_images = render_grid(G_ema, grid_z, grid_labels)
            save_image_grid(tick_images, os.path.join(run_dir, f'fakes{seen // 1000:06d}.png'), drange=[-1, 1],
                            grid_size=grid_size)

        # Network snapshot (written atomically), then the metrics on it.
        results = []
        if due(network_snapshot_ticks):
            networks = dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe)
            for name, module in networks.items():
                distributed.check_consistent(module, name)
            snapshot_pkl = os.path.join(run_dir, f'network-snapshot-{seen // 1000:06d}.pkl')
            if leader:
                record = dict(training_set_kwargs=dict(training_set_kwargs))
                for name, module in networks.items():
                    record[name] = None if module is None else copy.deepcopy(module).eval().requires_grad_(False).cpu()
                record['progress'] = dict(
                    cur_nimg=seen, cur_tick=tick + 1, batch_idx=step,
                    G_opt=resume.state_to_cpu(optimizers['G'].state_dict()),
                    D_opt=resume.state_to_cpu(optimizers['D'].state_dict()),
                    pl_mean=float(loss.pl_mean) if hasattr(loss, 'pl_mean') else None)
                checkpoint.save_network_pkl(snapshot_pkl, record)
                if monitor is not None:
                    monitor.save_spectrum(os.path.join(run_dir, f'spectrum-{seen // 1000:06d}.png'))
            for name in metrics:
                results.append(metric_main.calc_metric(metric=name, G=G_ema, dataset_kwargs=training_set_kwargs,
                                                       num_gpus=num_gpus, rank=rank, device=device))
                if leader:
                    metric_main.report_metric(results[-1], run_dir=run_dir, snapshot_pkl=snapshot_pkl)

        # Statistics: one reduction over processes. The line follows the snapshot, so a run killed
        # in between repeats no tick when it continues.
        tick_stats.update()
        stats = tick_stats.as_dict()
        if logs is not None:
            logs.write(stats, results, kimg=seen / 1000, elapsed=time.time() - launched)
            if monitor is not None and due(network_snapshot_ticks):
                save_curve(run_dir)             # spectral-monitor.png, redrawn from stats.jsonl

        # Hook point for per-tick monitors (e.g. spectral statistics): called on every process with
        # what the tick produced; `images` are the fakes rendered above (None in ticks without a grid).
        if tick_fn is not None:
            tick_fn(EasyDict(cur_tick=tick, cur_nimg=seen, run_dir=run_dir, rank=rank, G_ema=G_ema,
                             images=tick_images, stats=stats, metrics=results))
        notify(seen // 1000, total_kimg)

        tick += 1
        tick_began_nimg, tick_began = seen, time.time()
        maintenance_sec = tick_began - tick_ended
        if done:
            break

    if logs is not None:
        logs.close()
    say('\nExiting...')
