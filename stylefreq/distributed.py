"""Processes and collectives: the one home for multi-process setup and communication.

`launch(worker, num_procs)` runs `worker(proc, *args)` once per process:
  * under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR in the environment) in this process,
    which torchrun has started already, with an env:// rendezvous: any number of nodes;
  * with num_procs == 1 in this process, without a process group;
  * otherwise in num_procs processes started with torch.multiprocessing.spawn on this machine,
    meeting through a file in a temporary directory.
The backend is NCCL for CUDA devices and gloo for the CPU. The collectives below are no-ops in a
single process, so engine and metric code call them unconditionally.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile

import torch
import torch.distributed as dist

_TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


@dataclasses.dataclass(frozen=True)
class Process:
    """Where the current worker stands: global rank, world size, rank on this node, device."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def torchrun_world():
    """(rank, world_size, local_rank, local_world_size) when started by torchrun, else None."""
    if not all(v in os.environ for v in _TORCHRUN_VARS):
        return None
    try:
        rank, world, local = (int(os.environ[v]) for v in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'))
        local_world = int(os.environ.get('LOCAL_WORLD_SIZE', world))
    except ValueError:
        raise RuntimeError('torchrun environment variables RANK/WORLD_SIZE/LOCAL_RANK are not integers') from None
    if not (0 <= rank < world and 0 <= local < max(local_world, 1)):
        raise RuntimeError(f'inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}')
    return rank, world, local, local_world


def planned_world_size(num_procs: int) -> int:
    """The number of processes a launch with `num_procs` will have (torchrun's world wins)."""
    env = torchrun_world()
    return env[1] if env is not None else int(num_procs)


def default_device(local_rank: int = 0) -> torch.device:
    return torch.device('cuda', local_rank) if torch.cuda.is_available() else torch.device('cpu')


def configure_threads(local_procs: int = 1, threads: int | None = None) -> int:
    """Set torch's intra-op threads for one of `local_procs` processes on this machine.

    An explicit `threads` wins, then an explicit OMP_NUM_THREADS (a user who sets it on a shared
    machine means it); otherwise the cores are split between the local processes.
    """
    if threads is None:
        env = os.environ.get('OMP_NUM_THREADS', '').strip()
        if env.isdigit() and int(env) > 0:
            threads = int(env)
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // max(1, local_procs))
    torch.set_num_threads(int(threads))
    return int(threads)


def launch(worker, num_procs: int = 1, args: tuple = (), threads: int | None = None, device=None):
    """Run `worker(Process, *args)` in every process (see the module docstring); returns rank 0's
    result when it ran in this process, else None. `device` forces one device for every process."""
    env = torchrun_world()
    if env is not None:
        rank, world, local, local_world = env
        return _run(worker, args, rank, world, local, local_world, 'env://', threads, device)
    if num_procs <= 1:
        return _run(worker, args, 0, 1, 0, 1, None, threads, device)
    with tempfile.TemporaryDirectory() as tmp:
        init = 'file://' + os.path.join(os.path.abspath(tmp), '.torch_distributed_init')
        torch.multiprocessing.spawn(_spawned, args=(worker, args, num_procs, init, threads, device),
                                    nprocs=num_procs, join=True)
    return None


def _spawned(local_rank, worker, args, num_procs, init, threads, device):
    _run(worker, args, local_rank, num_procs, local_rank, num_procs, init, threads, device)
    # Done, and the process group is gone: leave without the interpreter's teardown, in which the
    # C++ runtime of a process that ran gloo collectives sometimes aborts ("terminate called
    # without an active exception", SIGABRT after a complete run). An exception above still
    # reaches torch.multiprocessing's error queue as usual.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _run(worker, args, rank, world, local_rank, local_world, init_method, threads, device):
    configure_threads(local_world, threads)
    dev = torch.device(device) if device is not None else default_device(local_rank)
    if world > 1:
        if dev.type == 'cuda':
            torch.cuda.set_device(dev)
        dist.init_process_group(backend='nccl' if dev.type == 'cuda' else 'gloo', init_method=init_method,
                                rank=rank, world_size=world)
    try:
        result = worker(Process(rank=rank, world_size=world, local_rank=local_rank, device=dev), *args)
        if world > 1:
            dist.barrier()      # no rank tears the group down while another still uses it
        return result
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------
# Collectives (no-ops without a process group).

def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes, in place; returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean_(tensors) -> None:
    """Average a list of same-dtype tensors over all processes in place, with one collective.

    Every process must pass the same shapes in the same order (give a missing gradient as zeros:
    dropping it on one rank would pair the wrong tensors)."""
    tensors = list(tensors)
    if any(t is None for t in tensors):
        raise TypeError('all_reduce_mean_: got None; pass zeros for missing gradients')
    if not tensors or not is_distributed():
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def broadcast_(tensors, src: int = 0) -> None:
    """Overwrite each tensor with rank `src`'s values."""
    if is_distributed():
        for t in tensors:
            dist.broadcast(t, src=src)


def broadcast_module_(module: torch.nn.Module, src: int = 0) -> None:
    """Give every process rank `src`'s parameters and buffers."""
    if module is not None and is_distributed():
        with torch.no_grad():
            broadcast_([t for t in list(module.parameters()) + list(module.buffers())], src=src)


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s picklable `obj`, on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's `x` along dim 0, in rank order (row counts may differ)."""
    if not is_distributed():
        return x
    world = dist.get_world_size()
    count = torch.tensor([x.shape[0]], dtype=torch.int64, device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    most = max(counts)
    padded = x
    if x.shape[0] < most:
        padded = torch.cat([x, x.new_zeros([most - x.shape[0], *x.shape[1:]])])
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, counts)])


def check_consistent(module: torch.nn.Module, what: str, ignore_suffixes=('.w_avg',)) -> None:
    """Raise if any parameter or buffer of `module` differs from rank 0's (NaNs compare equal)."""
    if module is None or not is_distributed():
        return
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if name.endswith(tuple(ignore_suffixes)):
            continue
        other = t.detach().clone()
        dist.broadcast(other, src=0)
        if not torch.equal(torch.nan_to_num(other), torch.nan_to_num(t.detach())):
            raise RuntimeError(f'{what}.{name} differs between processes; the run is no longer consistent')


def all_gather_matrices(x, device=None) -> list:
    """Every process's 2-D tensor `x` (or None: nothing this time), as float64 CPU tensors in rank
    order; shapes may differ between processes. `device`: where the collective runs (CUDA for NCCL)."""
    if not is_distributed():
        return [None if x is None else x.detach().to(torch.float64).cpu()]
    world = dist.get_world_size()
    dev = torch.device(device) if device is not None and torch.device(device).type == 'cuda' else torch.device('cpu')
    shape = torch.tensor([-1, 0] if x is None else list(x.shape), dtype=torch.int64, device=dev)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    shapes = [tuple(int(v) for v in s.cpu()) for s in shapes]
    rows, cols = max(max(s[0] for s in shapes), 1), max(max(s[1] for s in shapes), 1)
    buf = torch.zeros([rows, cols], dtype=torch.float64, device=dev)
    if x is not None:
        buf[:x.shape[0], :x.shape[1]] = x.detach().to(torch.float64)
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf)
    return [None if s[0] < 0 else p[:s[0], :s[1]].cpu() for s, p in zip(shapes, parts)]
