"""The training loop: phases Gmain/Greg/Dmain/Dreg, EMA, ADA, ticks, snapshots, metrics.

Shaped like StyleGAN2-ADA's loop (same arguments, files and statistics names) with these changes:
- gradients are averaged across ranks by one all-reduce per phase (no DDP wrappers), so plug-in
  networks with extra heads or unused parameters need no special treatment, and the same code
  runs with NCCL on GPUs and gloo on CPUs;
- a snapshot carries what a real resume needs (`progress`: images seen, tick, batch index,
  optimizer states, path-length mean), is written atomically, and `resume_pkl` of such a snapshot
  continues the run where it stood; an upstream pickle only provides weights, as upstream does;
- non-finite losses or gradients are counted, reported and zeroed instead of silently poisoning
  the weights.
"""

import copy
import json
import os
import time

import numpy as np
import PIL.Image
import torch
import torch.distributed as dist

from stylefreq import checkpoint
from stylefreq.kwargs import EasyDict, construct_class_by_name
from training import training_stats

# ----------------------------------------------------------------------------------------------
# Data


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless, resumable sample order: a new permutation per epoch, positions strided over ranks.

    Global stream position k holds sample perm[k // N][k % N] with perm[e] drawn from seed + e;
    rank r reads positions k = r, r + R, r + 2R, ... starting at `start`. Because every iteration
    consumes `batch_size` consecutive positions, a run resumed at `cur_nimg` continues with exactly
    the images it would have seen.
    """

    def __init__(self, dataset, rank=0, num_replicas=1, seed=0, start=0):
        if len(dataset) == 0:
            raise ValueError('the training set is empty')
        super().__init__()
        self.size = len(dataset)
        self.rank = rank
        self.num_replicas = num_replicas
        self.seed = seed
        self.start = start

    def __iter__(self):
        k = self.start + self.rank
        epoch, perm = None, None
        while True:
            if k // self.size != epoch:
                epoch = k // self.size
                perm = np.random.RandomState((self.seed + epoch) % 2 ** 32).permutation(self.size)
            yield int(perm[k % self.size])
            k += self.num_replicas


# ----------------------------------------------------------------------------------------------
# Image grids


def setup_snapshot_image_grid(training_set, random_seed=0):
    """Grid size as upstream (about 4K pixels wide, 7..32 by 4..32 images), reals, and labels per row."""
    rnd = np.random.RandomState(random_seed)
    gw = int(np.clip(7680 // training_set.image_shape[2], 7, 32))
    gh = int(np.clip(4320 // training_set.image_shape[1], 4, 32))
    if not training_set.has_labels:
        order = rnd.permutation(len(training_set))
        indices = [int(order[i % len(order)]) for i in range(gw * gh)]
    else:
        # One label per row, so a conditional model's grid shows each class side by side.
        groups = {}
        for idx in range(len(training_set)):
            label = tuple(training_set.get_details(idx).raw_label.flat[::-1])
            groups.setdefault(label, []).append(idx)
        labels = sorted(groups)
        for label in labels:
            rnd.shuffle(groups[label])
        indices = []
        for y in range(gh):
            group = groups[labels[y % len(labels)]]
            indices += [group[x % len(group)] for x in range(gw)]
            groups[labels[y % len(labels)]] = group[gw % len(group):] + group[:gw % len(group)]
    images, labels = zip(*[training_set[i] for i in indices])
    return (gw, gh), np.stack(images), np.stack(labels)


def save_image_grid(img, fname, drange, grid_size):
    """Write an [N, C, H, W] batch as one PNG of gh rows by gw columns; values mapped from drange."""
    lo, hi = drange
    img = np.asarray(img, dtype=np.float32)
    img = np.rint((img - lo) * (255 / (hi - lo))).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    _, C, H, W = img.shape
    img = img.reshape(gh, gw, C, H, W).transpose(0, 3, 1, 4, 2).reshape(gh * H, gw * W, C)
    if C not in (1, 3):
        raise ValueError(f'cannot save a {C}-channel image grid; expected 1 or 3 channels')
    tmp = fname + '.tmp.png'
    PIL.Image.fromarray(img[:, :, 0] if C == 1 else img, 'L' if C == 1 else 'RGB').save(tmp)
    os.replace(tmp, fname)


# ----------------------------------------------------------------------------------------------
# Distributed helpers


def _world():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def broadcast_module(module, src=0):
    """Make every rank's parameters and buffers equal to rank `src`'s."""
    if _world() > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def all_reduce_grads(params):
    """Average gradients over ranks with one flat all-reduce; missing gradients count as zero."""
    params = list(params)
    if _world() == 1 or not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= _world()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def check_ddp_consistency(module, ignore_suffixes=('.w_avg',)):
    """Raise if any parameter or buffer differs between ranks (before a snapshot is written)."""
    if _world() == 1:
        return
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if name.endswith(ignore_suffixes):
            continue
        ref = t.detach().clone()
        dist.broadcast(ref, src=0)
        if not torch.equal(ref.nan_to_num(), t.detach().nan_to_num()):
            raise RuntimeError(f'{name} differs between ranks; the run is no longer consistent')


# ----------------------------------------------------------------------------------------------


def _format_time(seconds):
    s = int(np.rint(seconds))
    if s < 60:
        return f'{s}s'
    if s < 3600:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 86400:
        return f'{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m'


def _cpu_mem_gb():
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 30
    except (OSError, ValueError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


class ResumeError(ValueError):
    """The checkpoint to resume from does not fit this run (one sentence for the user)."""


def copy_weights(src, dst, what):
    """Copy every tensor of `src` into the same-named tensor of `dst`; tensors new in `dst` keep their init.

    Shape mismatches raise one sentence naming both shapes (the usual cause: a different resolution,
    channel count or --cfg than the checkpoint was trained with).
    """
    src_tensors = dict(src.named_parameters())
    src_tensors.update(src.named_buffers())
    # A wrapper network (e.g. stylefreq.ssd around a discriminator) names the prefixes under which
    # it keeps a plain network, so a plain checkpoint's tensors find their place inside it.
    prefixes = tuple(getattr(dst, 'inner_prefixes', ()))
    missing = []
    with torch.no_grad():
        for name, t in list(dst.named_parameters()) + list(dst.named_buffers()):
            s = src_tensors.get(name)
            for prefix in prefixes:
                if s is None and name.startswith(prefix):
                    s = src_tensors.get(name[len(prefix):])
            for prefix in getattr(src, 'inner_prefixes', ()):   # wrapper checkpoint -> plain network
                if s is None:
                    s = src_tensors.get(prefix + name)
            if s is None:
                missing.append(name)
                continue
            if s.shape != t.shape:
                raise ResumeError(f'cannot resume {what}: {name} has shape {list(s.shape)} in the checkpoint but '
                                 f'{list(t.shape)} in the network being trained (different resolution, channels '
                                 f'or --cfg?)')
            t.copy_(s)
    return missing


def training_loop(
    run_dir='.',                    # Output directory.
    training_set_kwargs={},         # Options for the training set.
    data_loader_kwargs={},          # Options for torch.utils.data.DataLoader.
    G_kwargs={},                    # Options for the generator.
    D_kwargs={},                    # Options for the discriminator.
    G_opt_kwargs={},                # Options for the generator optimizer.
    D_opt_kwargs={},                # Options for the discriminator optimizer.
    augment_kwargs=None,            # Options for the augmentation pipeline; None = no augmentation.
    loss_kwargs={},                 # Options for the loss.
    metrics=[],                     # Metrics to evaluate after each network snapshot.
    random_seed=0,                  # Global random seed.
    num_gpus=1,                     # Number of processes taking part (GPUs, or CPU processes).
    rank=0,                         # Rank of this process.
    batch_size=4,                   # Total batch size for one iteration, over all processes.
    batch_gpu=4,                    # Samples processed at a time by one process.
    ema_kimg=10,                    # Half-life of the generator EMA, in thousands of images.
    ema_rampup=None,                # EMA ramp-up coefficient; None = no ramp-up.
    G_reg_interval=4,               # Lazy regularisation interval for G; None = regularise every step.
    D_reg_interval=16,              # Lazy regularisation interval for D.
    augment_p=0,                    # Initial augmentation probability.
    ada_target=None,                # ADA target for E[sign(D(real))]; None = fixed p.
    ada_interval=4,                 # Iterations between ADA adjustments.
    ada_kimg=500,                   # Thousands of images for p to move by 1.
    total_kimg=25000,               # Length of the run.
    kimg_per_tick=4,                # Progress line interval.
    image_snapshot_ticks=50,        # Image grid interval (ticks); None = never.
    network_snapshot_ticks=50,      # Network snapshot interval (ticks); None = never.
    resume_pkl=None,                # Checkpoint to start from (path or URL).
    cudnn_benchmark=True,           # torch.backends.cudnn.benchmark.
    allow_tf32=False,               # TF32 matmul/convolutions on Ampere+.
    abort_fn=None,                  # Callable returning True to stop after the current tick (same on all ranks).
    progress_fn=None,               # Callable(cur_kimg, total_kimg), all ranks.
    device=None,                    # torch.device; default: cuda:<rank> if CUDA is available, else cpu.
):
    start_time = time.time()
    if device is None:
        device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
    device = torch.device(device)
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
    log = print if rank == 0 else (lambda *a, **k: None)

    # Resume state (every rank reads the checkpoint; rank 0's tensors are broadcast below anyway).
    resume_data = None
    progress = None
    if resume_pkl is not None:
        log(f'Resuming from "{resume_pkl}"')
        try:
            resume_data = checkpoint.load_network_pkl(resume_pkl, verbose=(rank == 0))
        except FileNotFoundError as err:
            raise ResumeError(f'cannot resume: {err}') from None
        progress = resume_data.get('progress')
        resumed_data = (resume_data.get('training_set_kwargs') or {}).get('path')
        if progress and resumed_data != training_set_kwargs.get('path'):
            # Same weights, different data: this is fine-tuning, which starts its own count.
            log(f'The checkpoint was trained on {resumed_data!r}; fine-tuning from its weights (kimg starts at 0).')
            progress = None

    cur_nimg = int(progress['cur_nimg']) if progress else 0
    cur_tick = int(progress['cur_tick']) if progress else 0
    batch_idx = int(progress['batch_idx']) if progress else 0

    log('Loading training set...')
    training_set = construct_class_by_name(**training_set_kwargs)
    log()
    log('Num images: ', len(training_set))
    log('Image shape:', training_set.image_shape)
    log('Label shape:', training_set.label_shape)
    log()

    log('Constructing networks...')
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                         img_channels=training_set.num_channels)
    G = construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    if resume_data is not None:
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
            src = resume_data.get(name)
            if not isinstance(src, torch.nn.Module):
                raise ResumeError(f'{resume_pkl} has no {name} network to resume from')
            # Same-named tensors can agree in shape across resolutions (small channel_base): check
            # the image shape itself rather than half-load a network of another resolution.
            src_shape = [getattr(src, 'img_channels', None)] + [getattr(src, 'img_resolution', None)] * 2
            if None not in src_shape and src_shape != list(training_set.image_shape):
                raise ResumeError(f'cannot resume {name} from {resume_pkl}: it was made for images of shape '
                                  f'{src_shape} but the training set has shape {list(training_set.image_shape)}; '
                                  f'fine-tune on data of the checkpoint\'s resolution and channel count')
            missing = copy_weights(src, module, name)
            if missing and rank == 0:
                print(f'{name}: {len(missing)} tensors not in the checkpoint keep their initial values '
                      f'(e.g. {missing[0]})')
            if missing and progress:
                # A different network (e.g. a branch added to a plain run) cannot continue the
                # optimizer state or the schedule: it starts a fine-tuning run from these weights.
                log(f'{name} differs from the checkpoint\'s network; fine-tuning from its weights (kimg starts at 0).')
                progress = None
                cur_nimg = cur_tick = batch_idx = 0
    for module in (G, D, G_ema):
        broadcast_module(module)
    sampler = InfiniteSampler(training_set, rank=rank, num_replicas=num_gpus, seed=random_seed, start=cur_nimg)
    training_set_iterator = iter(torch.utils.data.DataLoader(dataset=training_set, sampler=sampler,
                                                             batch_size=batch_size // num_gpus, **data_loader_kwargs))
    log(f'Generator:     {sum(p.numel() for p in G.parameters()):,} parameters, {G.num_ws} ws')
    log(f'Discriminator: {sum(p.numel() for p in D.parameters()):,} parameters')

    log('Setting up augmentation...')
    augment_pipe = None
    ada_stats = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        augment_pipe = construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(augment_p))
        if resume_data is not None and isinstance(resume_data.get('augment_pipe'), torch.nn.Module) and progress:
            augment_pipe.p.copy_(resume_data['augment_pipe'].p)   # a stylefreq resume continues its p
        broadcast_module(augment_pipe)
        if ada_target is not None:
            ada_stats = training_stats.Collector(regex='Loss/signs/real')

    log(f'Distributing across {num_gpus} {"GPUs" if device.type == "cuda" else "processes"}...')
    if num_gpus > 1:
        training_stats.init_multiprocessing(rank=rank, sync_device=device)

    log('Setting up training phases...')
    loss = construct_class_by_name(device=device, G_mapping=G.mapping, G_synthesis=G.synthesis, D=D,
                                   augment_pipe=augment_pipe, **loss_kwargs)
    if progress and 'pl_mean' in progress and hasattr(loss, 'pl_mean'):
        loss.pl_mean.copy_(torch.as_tensor(progress['pl_mean']))
    phases = []
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval),
                                                   ('D', D, D_opt_kwargs, D_reg_interval)]:
        opt_kwargs = EasyDict(opt_kwargs)
        if reg_interval is None:
            opt = construct_class_by_name(module.parameters(), **opt_kwargs)
            phases += [EasyDict(name=name + 'both', module=module, opt=opt, interval=1)]
        else:
            # Lazy regularisation: the reg phase runs every `reg_interval` steps with its loss scaled
            # up by the interval; the optimizer's lr and betas are adjusted to keep the same dynamics.
            mb_ratio = reg_interval / (reg_interval + 1)
            opt_kwargs.lr = opt_kwargs.lr * mb_ratio
            opt_kwargs.betas = [beta ** mb_ratio for beta in opt_kwargs.betas]
            opt = construct_class_by_name(module.parameters(), **opt_kwargs)
            phases += [EasyDict(name=name + 'main', module=module, opt=opt, interval=1)]
            phases += [EasyDict(name=name + 'reg', module=module, opt=opt, interval=reg_interval)]
        if progress and f'{name}_opt' in progress:
            opt.load_state_dict(progress[f'{name}_opt'])

    grid_size = grid_z = grid_c = None
    if rank == 0:
        log('Exporting sample images...')
        grid_size, images, labels = setup_snapshot_image_grid(training_set=training_set)
        save_image_grid(images, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=grid_size)
        grid_rng = torch.Generator().manual_seed(random_seed)
        grid_z = torch.randn([labels.shape[0], G.z_dim], generator=grid_rng).to(device).split(batch_gpu)
        grid_c = torch.from_numpy(labels).to(device).split(batch_gpu)
        if not progress:
            save_image_grid(_render(G_ema, grid_z, grid_c), os.path.join(run_dir, 'fakes_init.png'),
                            drange=[-1, 1], grid_size=grid_size)

    log('Initializing logs...')
    stats_collector = training_stats.Collector(regex='.*')
    stats_metrics = {}
    stats_jsonl = None
    stats_tfevents = None
    if rank == 0:
        stats_jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at')
        try:
            import torch.utils.tensorboard as tensorboard
            stats_tfevents = tensorboard.SummaryWriter(run_dir)
        except ImportError:
            pass

    log(f'Training for {total_kimg} kimg{f" (continuing at {cur_nimg / 1000:.1f})" if cur_nimg else ""}...')
    log()
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    first_tick = not progress   # a fresh run reports tick 0 right after its first iteration
    if progress_fn is not None:
        progress_fn(cur_nimg // 1000, total_kimg)

    while True:
        # Fetch reals and draw latents/labels for every phase.
        real_img, real_c = next(training_set_iterator)
        phase_real_img = (real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
        phase_real_c = real_c.to(device).split(batch_gpu)
        all_gen_z = torch.randn([len(phases) * batch_size, G.z_dim], device=device)
        all_gen_z = [z.split(batch_gpu) for z in all_gen_z.split(batch_size)]
        all_gen_c = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(len(phases) * batch_size)]
        all_gen_c = torch.from_numpy(np.stack(all_gen_c)).to(device)
        all_gen_c = [c.split(batch_gpu) for c in all_gen_c.split(batch_size)]

        for phase, phase_gen_z, phase_gen_c in zip(phases, all_gen_z, all_gen_c):
            if batch_idx % phase.interval != 0:
                continue
            t0 = time.time()
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            for real_img_, real_c_, gen_z, gen_c in zip(phase_real_img, phase_real_c, phase_gen_z, phase_gen_c):
                loss.accumulate_gradients(phase=phase.name, real_img=real_img_, real_c=real_c_, gen_z=gen_z,
                                          gen_c=gen_c, gain=phase.interval)
            phase.module.requires_grad_(False)

            params = [p for p in phase.module.parameters()]
            all_reduce_grads(params)
            # Count non-finite values with one host sync per phase (not one per parameter).
            grads = [p.grad for p in params if p.grad is not None]
            bad = int(sum((~torch.isfinite(g)).sum() for g in grads)) if grads else 0
            if bad:
                for g in grads:
                    torch.nan_to_num(g, nan=0, posinf=1e5, neginf=-1e5, out=g)
            training_stats.report(f'Health/nonfinite_grads/{phase.name}', bad)
            if bad and rank == 0:
                print(f'warning: {bad} non-finite gradient values in phase {phase.name} at kimg '
                      f'{cur_nimg / 1000:.1f}; zeroed before the optimizer step')
            phase.opt.step()
            training_stats.report0('Timing/' + phase.name, time.time() - t0)

        # Generator EMA.
        ema_nimg = ema_kimg * 1000
        if ema_rampup is not None:
            ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
        ema_beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, ema_beta))
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

        cur_nimg += batch_size
        batch_idx += 1

        # ADA: move p towards the target overfitting heuristic E[sign(D(real))].
        if ada_stats is not None and batch_idx % ada_interval == 0:
            ada_stats.update()
            adjust = np.sign(ada_stats['Loss/signs/real'] - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)
            if np.isfinite(adjust):
                augment_pipe.p.copy_((augment_pipe.p + adjust).clamp(min=0))

        done = cur_nimg >= total_kimg * 1000
        if not done and not first_tick and cur_nimg < tick_start_nimg + kimg_per_tick * 1000:
            continue
        first_tick = False

        # Tick: progress line.
        tick_end_time = time.time()
        loss_values = [training_stats.report0('Progress/tick', cur_tick),
                       training_stats.report0('Progress/kimg', cur_nimg / 1e3)]
        sec_tick = tick_end_time - tick_start_time
        sec_kimg = sec_tick / max(cur_nimg - tick_start_nimg, 1) * 1e3
        training_stats.report0('Timing/total_sec', tick_end_time - start_time)
        training_stats.report0('Timing/sec_per_tick', sec_tick)
        training_stats.report0('Timing/sec_per_kimg', sec_kimg)
        training_stats.report0('Timing/maintenance_sec', maintenance_time)
        cpumem = training_stats.report0('Resources/cpu_mem_gb', _cpu_mem_gb())
        gpumem = 0.0
        if device.type == 'cuda':
            gpumem = torch.cuda.max_memory_allocated(device) / 2 ** 30
            torch.cuda.reset_peak_memory_stats(device)
        training_stats.report0('Resources/peak_gpu_mem_gb', gpumem)
        p_now = float(augment_pipe.p.cpu()) if augment_pipe is not None else 0.0
        training_stats.report0('Progress/augment', p_now)
        training_stats.report0('Timing/total_hours', (tick_end_time - start_time) / 3600)
        training_stats.report0('Timing/total_days', (tick_end_time - start_time) / 86400)
        log(f'tick {loss_values[0]:<5d} kimg {loss_values[1]:<8.1f} time {_format_time(tick_end_time - start_time):<12s} '
            f'sec/tick {sec_tick:<7.1f} sec/kimg {sec_kimg:<7.2f} maintenance {maintenance_time:<6.1f} '
            f'cpumem {cpumem:<6.2f} gpumem {gpumem:<6.2f} augment {p_now:.3f}', flush=True)

        if not done and abort_fn is not None and abort_fn():
            done = True
            log()
            log('Aborting...')

        if rank == 0 and image_snapshot_ticks is not None and (done or cur_tick % image_snapshot_ticks == 0):
            save_image_grid(_render(G_ema, grid_z, grid_c), os.path.join(run_dir, f'fakes{cur_nimg // 1000:06d}.png'),
                            drange=[-1, 1], grid_size=grid_size)

        snapshot_pkl = None
        snapshot_data = None
        if network_snapshot_ticks is not None and (done or cur_tick % network_snapshot_ticks == 0):
            snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs))
            for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe)]:
                if module is not None:
                    check_ddp_consistency(module)
                    module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
                snapshot_data[name] = module
            snapshot_data['progress'] = dict(
                cur_nimg=cur_nimg, cur_tick=cur_tick + 1, batch_idx=batch_idx, total_kimg=total_kimg,
                pl_mean=float(loss.pl_mean) if hasattr(loss, 'pl_mean') else 0.0,
                **{f'{ph.name[0]}_opt': _cpu_state(ph.opt.state_dict()) for ph in phases if ph.name.endswith(('main', 'both'))})
            snapshot_pkl = os.path.join(run_dir, f'network-snapshot-{cur_nimg // 1000:06d}.pkl')
            if rank == 0:
                checkpoint.save_network_pkl(snapshot_pkl, snapshot_data)

        if snapshot_data is not None and len(metrics) > 0:
            from metrics import metric_main
            log('Evaluating metrics...')
            for metric in metrics:
                result_dict = metric_main.calc_metric(metric=metric, G=snapshot_data['G_ema'],
                                                      dataset_kwargs=training_set_kwargs, num_gpus=num_gpus,
                                                      rank=rank, device=device)
                if rank == 0:
                    metric_main.report_metric(result_dict, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
                stats_metrics.update(result_dict.results)
        del snapshot_data

        stats_collector.update()
        stats_dict = stats_collector.as_dict()
        timestamp = time.time()
        if stats_jsonl is not None:
            stats_jsonl.write(json.dumps(dict(stats_dict, timestamp=timestamp)) + '\n')
            stats_jsonl.flush()
        if stats_tfevents is not None:
            step = int(cur_nimg / 1e3)
            for name, value in stats_dict.items():
                stats_tfevents.add_scalar(name, value['mean'], global_step=step, walltime=timestamp - start_time)
            for name, value in stats_metrics.items():
                stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=step, walltime=timestamp - start_time)
            stats_tfevents.flush()
        if progress_fn is not None:
            progress_fn(cur_nimg // 1000, total_kimg)

        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time
        if done:
            break

    if stats_jsonl is not None:
        stats_jsonl.close()
    log()
    log('Exiting...')


def _render(G_ema, grid_z, grid_c):
    with torch.no_grad():
        force_fp32 = grid_z[0].device.type != 'cuda'
        return torch.cat([G_ema(z=z, c=c, noise_mode='const', force_fp32=force_fp32).cpu()
                          for z, c in zip(grid_z, grid_c)]).numpy()


def _cpu_state(state):
    """Optimizer state_dict with every tensor on the CPU (snapshots must load on any machine)."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().clone()
    if isinstance(state, dict):
        return {k: _cpu_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_state(v) for v in state)
    return state
