"""Training statistics: report values anywhere, summarise them once per tick over all processes.

    training_stats.report('Loss/G/loss', loss)         # a tensor of any shape on any device, or numbers
    training_stats.report0('Timing/Gmain', seconds)    # counted on rank 0 only
    collector = training_stats.Collector(regex='.*')   # after the process group exists
    collector.update()                                  # on every process, e.g. once per tick
    collector.as_dict()                                 # {name: {num, mean, std}} since the last update

`report` adds [sum, sum of squares] of the values to totals that live on the values' device
(float64; float32 where a device has no float64); the number of values is known on the host
already, so it is counted there. Nothing is copied to the host and nothing waits for the device
per call, which matters when losses are reported from CUDA tensors every step.

Reports wait in a pending pool. A collector's update first hands the pool to every live collector
whose pattern matches (a collector created later never sees earlier values, so a second run in the
same process starts from zero), then puts what it holds into one [names, 3] table (count, sum,
sum of squares) on the reduction device, adds the tables of all processes with one all-reduce,
copies the result to the host once and starts holding anew.

Every process must report the same set of names, since the table is reduced row by row in name
order: `report0` therefore registers its name on the other ranks without adding values.
"""

from __future__ import annotations

import math
import re
import weakref

import numpy as np
import torch

from stylefreq import distributed
from stylefreq.kwargs import EasyDict


def _sum_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == 'mps' else torch.float64


class _Totals:
    """Totals of one statistic: a host count, host sums of plain numbers, [sum, sum of squares] per device."""

    def __init__(self):
        self.count = 0
        self.host = [0.0, 0.0]
        self.on_device = {}         # torch.device -> tensor [2]

    def add_tensor(self, flat: torch.Tensor):
        if flat.numel() == 0:
            return
        flat = flat.to(_sum_dtype(flat.device))
        self._add_moments(flat.device, torch.stack([flat.sum(), flat.square().sum()]))
        self.count += flat.numel()

    def add_numbers(self, values: np.ndarray):
        self.host[0] += float(values.sum())
        self.host[1] += float(np.square(values).sum())
        self.count += int(values.size)

    def add_totals(self, other: '_Totals'):
        self.count += other.count
        self.host = [mine + theirs for mine, theirs in zip(self.host, other.host)]
        for device, moments in other.on_device.items():
            self._add_moments(device, moments)

    def _add_moments(self, device, moments):
        held = self.on_device.get(device)
        self.on_device[device] = moments.clone() if held is None else held.add_(moments)


_known_names: set = set()
_pending: dict = {}                       # name -> _Totals reported since the last hand-over
_collectors = weakref.WeakSet()


def report(name: str, value):
    """Add `value` (a tensor, a number or a sequence of numbers) to the statistic `name`; returns value."""
    _known_names.add(name)
    totals = _pending.setdefault(name, _Totals())
    if isinstance(value, torch.Tensor):
        totals.add_tensor(value.detach().flatten())
    else:
        totals.add_numbers(np.asarray(value, dtype=np.float64).ravel())
    return value


def report0(name: str, value):
    """Like `report` on rank 0; other ranks only register the name (see the module docstring)."""
    report(name, value if distributed.get_rank() == 0 else [])
    return value


def _hand_over():
    """Give the pending reports to every collector that watches their names, then forget them."""
    for name, totals in _pending.items():
        for collector in list(_collectors):
            if collector._pattern.fullmatch(name):
                collector._held.setdefault(name, _Totals()).add_totals(totals)
    _pending.clear()


def _reduction_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo (and a single process) work on the CPU.
    if distributed.is_distributed() and torch.distributed.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def _table(names, held: dict, device) -> torch.Tensor:
    """[len(names), 3] float64 (count, sum, sum of squares) of `held` totals on `device`."""
    empty = _Totals()
    entries = [held.get(name, empty) for name in names]
    table = torch.tensor([[float(t.count)] + t.host for t in entries], dtype=torch.float64).reshape(-1, 3)
    table = table.to(device)
    by_device = {}
    for row, totals in enumerate(entries):
        for dev, moments in totals.on_device.items():
            by_device.setdefault(dev, []).append((row, moments))
    for pairs in by_device.values():
        rows = torch.tensor([row for row, _ in pairs], device=device)
        moments = torch.stack([m for _, m in pairs]).to(device=device, dtype=torch.float64)
        table[:, 1:].index_add_(0, rows, moments)
    return table


class Collector:
    """Summaries of the statistics whose names match `regex`, over the interval between updates.

    With `keep_previous`, a statistic that got no values since the last update keeps its last
    summary; otherwise it disappears until it gets values again.
    """

    def __init__(self, regex: str = '.*', keep_previous: bool = True):
        self._pattern = re.compile(regex)
        self._keep = keep_previous
        self._device = _reduction_device()
        self._summary = {}          # name -> (num, mean, std)
        _hand_over()                # what was reported before this collector existed is not its business
        self._held = {}
        _collectors.add(self)

    def update(self) -> None:
        """Summarise what every process reported since the previous update (a collective call)."""
        _hand_over()
        names = sorted(name for name in _known_names if self._pattern.fullmatch(name))
        table = _table(names, self._held, self._device)
        self._held = {}
        distributed.all_reduce_sum_(table)
        rows = table.cpu().numpy()

        if not self._keep:
            self._summary = {}
        for name, (num, total, total_sq) in zip(names, rows):
            if num > 0:
                mean = total / num
                self._summary[name] = (float(num), float(mean), math.sqrt(max(total_sq / num - mean * mean, 0.0)))

    def names(self) -> list:
        return sorted(self._summary)

    def num(self, name) -> float:
        return self._summary.get(name, (0.0, math.nan, math.nan))[0]

    def mean(self, name) -> float:
        return self._summary.get(name, (0.0, math.nan, math.nan))[1]

    def std(self, name) -> float:
        return self._summary.get(name, (0.0, math.nan, math.nan))[2]

    def as_dict(self) -> EasyDict:
        """{name: EasyDict(num, mean, std)} for every statistic with a summary."""
        return EasyDict((name, EasyDict(num=num, mean=mean, std=std))
                        for name, (num, mean, std) in sorted(self._summary.items()))

    __getitem__ = mean
