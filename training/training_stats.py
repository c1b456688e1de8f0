"""Training statistics: `report(name, value)` from anywhere, reduced across ranks by a `Collector`.

Each reported value contributes (count, sum, sum of squares), in float64, to every live Collector
whose regex matches its name. A Collector's `update()` takes what accumulated since its previous
update, so several collectors (the per-tick log and the ADA heuristic, say) read independent
windows of the same reports, exactly (no differences of large running totals).
In a multi-process run `update()` all-reduces the deltas, so every rank sees the global mean/std.
"""

import math
import re
import weakref
from collections import defaultdict

import torch
import torch.distributed as dist

_collectors = weakref.WeakSet()   # live collectors; each accumulates the reports its regex matches
_rank = 0
_sync_device = None   # device used for the all-reduce (cuda for NCCL, cpu for gloo)


def init_multiprocessing(rank, sync_device):
    """Call once per process before collecting in a distributed run (sync_device=None: single process)."""
    global _rank, _sync_device
    _rank = rank
    _sync_device = sync_device


def report(name, value):
    """Record one or many scalar samples (a number or a tensor of any shape) under `name`.

    Returns `value` unchanged so calls can be inlined. Non-finite samples are counted as they are:
    a NaN in the log is the signal that something diverged.
    """
    with torch.no_grad():
        # Python numbers straight to float64 (torch.as_tensor would round them to float32 first).
        v = torch.as_tensor(value, dtype=None if isinstance(value, torch.Tensor) else torch.float64)
        v = v.detach().flatten().to(torch.float64)
        if v.numel() == 0:
            return value
        moments = torch.stack([torch.tensor(float(v.numel()), dtype=torch.float64), v.sum(), v.square().sum()])
        moments = moments.cpu()
        for collector in list(_collectors):
            if collector._regex.fullmatch(name):
                collector._pending[name] += moments
    return value


def report0(name, value):
    """Like `report`, but only rank 0's value counts (for values that are the same on every rank)."""
    return report(name, value) if _rank == 0 else value


class Collector:
    """Reads the statistics reported since the previous `update()` whose names match `regex`."""

    def __init__(self, regex='.*'):
        self._regex = re.compile(regex)
        self._pending = defaultdict(lambda: torch.zeros([3], dtype=torch.float64))
        self._moments = {}
        _collectors.add(self)

    def names(self):
        return sorted(self._moments)

    def update(self):
        pending, self._pending = self._pending, defaultdict(lambda: torch.zeros([3], dtype=torch.float64))
        names = sorted(pending)
        distributed = (_sync_device is not None and dist.is_available() and dist.is_initialized()
                       and dist.get_world_size() > 1)
        if distributed:
            # Every rank must reduce the same list of names, in the same order.
            all_names = [None] * dist.get_world_size()
            dist.all_gather_object(all_names, names)
            names = sorted(set().union(*all_names))
        moments = [pending[name] for name in names]
        if moments and distributed:
            flat = torch.stack(moments).to(_sync_device)
            dist.all_reduce(flat)
            moments = list(flat.cpu().unbind(0))
        self._moments = dict(zip(names, moments))

    def num(self, name):
        m = self._moments.get(name)
        return int(m[0]) if m is not None else 0

    def mean(self, name):
        m = self._moments.get(name)
        if m is None or m[0] == 0:
            return float('nan')
        return float(m[1] / m[0])

    def std(self, name):
        m = self._moments.get(name)
        if m is None or m[0] == 0:
            return float('nan')
        mean = float(m[1] / m[0])
        var = float(m[2] / m[0]) - mean ** 2
        return math.sqrt(max(var, 0.0)) if math.isfinite(var) else float('nan')

    def as_dict(self):
        """{name: {num, mean, std}} for names with at least one sample (the stats.jsonl format)."""
        return {name: dict(num=self.num(name), mean=self.mean(name), std=self.std(name))
                for name in self.names() if self.num(name) > 0}

    def __getitem__(self, name):
        return self.mean(name)
