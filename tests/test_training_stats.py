"""training/training_stats.py: moments against NumPy, intervals between updates, and what a report
costs on the device (no host round trip, nothing on another device)."""

import pathlib

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = pathlib.Path(__file__).resolve().parents[1]

from training import training_stats


class RecordOps(TorchDispatchMode):
    """Every aten op run inside the block, with the devices of its tensor outputs."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else [out]
        self.ops.append((str(func), {t.device.type for t in outs if isinstance(t, torch.Tensor)}))
        return out


def test_moments_over_an_interval_match_numpy():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(3, 5)), rng.normal(size=7)
    training_stats.report('test/early', 123.0)                  # before the collector: not counted
    collector = training_stats.Collector(regex='test/.*')
    training_stats.report('test/x', torch.from_numpy(first).float())
    training_stats.report('test/x', second.tolist())
    training_stats.report('test/n', 2)
    training_stats.report('test/empty', torch.zeros([0]))
    training_stats.report('other/x', 1.0)
    collector.update()
    values = np.concatenate([first.astype(np.float32).ravel(), second])
    assert collector.num('test/x') == values.size
    assert collector.mean('test/x') == pytest.approx(values.mean(), rel=1e-6)
    assert collector.std('test/x') == pytest.approx(values.std(), rel=1e-6)
    assert collector.names() == ['test/n', 'test/x']
    assert collector.as_dict()['test/n'] == dict(num=1, mean=2.0, std=0.0)
    assert collector['test/x'] == collector.mean('test/x')

    # The next interval holds only what came after the update; a silent name keeps its summary.
    training_stats.report('test/x', [10.0, 20.0])
    collector.update()
    assert (collector.num('test/x'), collector.mean('test/x'), collector.std('test/x')) == (2, 15.0, 5.0)
    assert collector.num('test/n') == 1
    fresh = training_stats.Collector(regex='test/.*', keep_previous=False)
    fresh.update()
    assert fresh.names() == [] and np.isnan(fresh.mean('test/x'))


def test_report0_counts_rank_zero_only_but_registers_the_name():
    collector = training_stats.Collector(regex='zero/.*')
    training_stats.report0('zero/value', 4.0)
    collector.update()
    assert collector.as_dict()['zero/value'] == dict(num=1, mean=4.0, std=0.0)


def test_report_stays_on_the_values_device():
    """A report is device work only: no op reads a value back to the host (no .item()), and every
    result lives on the value's device (the meta device here stands in for a GPU; a count kept on
    the CPU next to device sums would make the stack fail)."""
    value = torch.empty([4, 3], device='meta')
    try:
        with RecordOps() as recorder:
            training_stats.report('device/loss', value)
            training_stats.report('device/loss', value)
    finally:   # meta sums cannot be summarised by later collectors
        training_stats._pending.pop('device/loss', None)
        training_stats._known_names.discard('device/loss')
    assert recorder.ops
    assert not [op for op, _ in recorder.ops if '_local_scalar_dense' in op]
    assert {device for _, devices in recorder.ops for device in devices} == {'meta'}


def test_overlapping_collectors_each_see_every_value_exactly():
    """Two collectors watching the same name (the loop's per-tick one and ADA's) both get every value;
    an interval's summary is computed from that interval's values alone (no cumulative differences)."""
    wide = training_stats.Collector(regex='exact/.*')
    narrow = training_stats.Collector(regex='exact/kimg')
    for _ in range(1000):
        training_stats.report('exact/kimg', 123.456)
    narrow.update()
    training_stats.report('exact/kimg', torch.tensor([0.008], dtype=torch.float64))
    narrow.update()
    wide.update()
    assert narrow.as_dict()['exact/kimg'] == dict(num=1, mean=0.008, std=0.0)
    assert wide.num('exact/kimg') == 1001
    assert wide.mean('exact/kimg') == pytest.approx((1000 * 123.456 + 0.008) / 1001, rel=1e-12)
