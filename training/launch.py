"""Running a training: the processes (this one, torchrun's, or ones started here), the run
directory's lock and log, and one-sentence errors. train.py and the studies start runs through
`launch`.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch

from stylefreq import distributed, files
from stylefreq.checkpoint import CheckpointError
from training import resume, training_loop
from training.dataset import DatasetError

# Errors that end a run with one sentence instead of a traceback.
RUN_ERRORS = (DatasetError, CheckpointError, resume.ResumeError, resume.SharedError, files.LockError, OSError)


class _Tee:
    """Writes to a console stream and to the run's log.txt."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.stream.write(text)
        self.log.write(text)
        self.log.flush()

    def flush(self):
        self.stream.flush()
        self.log.flush()

    def __getattr__(self, name):            # isatty, encoding, ... of the console stream
        return getattr(self.stream, name)


@contextlib.contextmanager
def _console_to_log(run_dir):
    with open(os.path.join(run_dir, 'log.txt'), 'at', encoding='utf-8') as log:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


def train_process(proc: distributed.Process, options):
    """One training process. Rank 0 opens (and locks) the run directory and tees the console into
    its log.txt; a bad dataset or checkpoint met on the way ends the process with one sentence."""
    lock = None
    try:
        lock = resume.on_rank0(lambda: resume.open_run_dir(options.run_dir, options))
        logging = _console_to_log(options.run_dir) if proc.rank == 0 else contextlib.nullcontext()
        with logging:
            try:
                training_loop.training_loop(rank=proc.rank, device=proc.device, **options)
            except RUN_ERRORS as err:
                _fail(proc, err)
    except RUN_ERRORS as err:
        _fail(proc, err)
    finally:
        if lock is not None:
            lock.release()


def _fail(proc, err):
    # An error rank 0 met for everyone is printed once; one a process met alone, by that process.
    if proc.rank == 0 or not isinstance(err, resume.SharedError):
        print(f'Error: {err}', file=sys.stderr)
    raise SystemExit(1)


def launch(options, threads=None, device=None):
    """Train with `options` (a training_options dict with run_dir) in options.num_gpus processes:
    this one, torchrun's, or ones started here (NCCL on GPUs, gloo on CPUs). `device` forces one
    device for every process (e.g. 'cpu' on a GPU machine)."""
    try:
        distributed.launch(train_process, num_procs=options.num_gpus, args=(options,), threads=threads,
                           device=device)
    except torch.multiprocessing.ProcessExitedException as exited:
        raise SystemExit(exited.exit_code or 1) from None       # the process has said why
