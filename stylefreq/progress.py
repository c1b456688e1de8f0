"""Human-readable durations (`1h 02m 03s`, StyleGAN2-ADA's format) and progress lines for long work."""

import sys
import time


def format_time(seconds: float) -> str:
    """`42s`, `3m 07s`, `2h 05m 09s`, `3d 04h 05m` (rounded to whole seconds)."""
    total = int(round(float(seconds)))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f'{days}d {hours:02d}h {minutes:02d}m'
    if hours:
        return f'{hours}h {minutes:02d}m {secs:02d}s'
    if minutes:
        return f'{minutes}m {secs:02d}s'
    return f'{secs}s'


class ProgressMonitor:
    """Progress lines for long work (metrics over thousands of images), printed when `verbose`:
    one line rewritten in place on a terminal, else a line every `interval_s` seconds and at the
    end of each task."""

    def __init__(self, verbose=False, stream=None, interval_s=10.0):
        self.verbose = verbose
        self.stream = stream
        self.interval_s = interval_s

    def task(self, tag, num_items):
        return ProgressTask(self, tag, num_items)


class ProgressTask:
    """One task's line: '<tag> <done>/<total> items  <elapsed>  <ms/item>  eta <time>'."""

    def __init__(self, monitor, tag, num_items):
        self.monitor, self.tag, self.num_items = monitor, tag, num_items
        self.start = time.time()
        self.last_print = 0.0
        self.done = False

    def update(self, cur_items):
        mon = self.monitor
        if not mon.verbose or self.done:
            return
        stream = mon.stream or sys.stdout
        tty = hasattr(stream, 'isatty') and stream.isatty()
        finished = self.num_items is not None and cur_items >= self.num_items
        now = time.time()
        if not finished and now - self.last_print < (0.5 if tty else mon.interval_s):
            return
        self.last_print = now
        elapsed = now - self.start
        total = f'/{self.num_items}' if self.num_items is not None else ''
        eta = ''
        if self.num_items and 0 < cur_items < self.num_items:
            eta = f'  eta {format_time(elapsed / cur_items * (self.num_items - cur_items))}'
        line = (f'{self.tag:<20s} {cur_items}{total} items  {format_time(elapsed)}  '
                f'{elapsed / max(cur_items, 1) * 1e3:.2f} ms/item{eta}')
        stream.write('\r' + line.ljust(79) + ('\n' if finished else '') if tty else line + '\n')
        stream.flush()
        self.done = finished
