"""Files that are either complete or absent, and run-directory locks.

Every file stylefreq writes that a crash could leave half-written (snapshots, downloads, image
grids, statistics caches, datasets, JSON results) goes through `atomic_write`: the bytes go to a
hidden temporary file in the destination's directory, are flushed to disk, and the temporary file
is renamed over the destination. A reader therefore sees the old file or the new one, never a
prefix. Temporary files carry the suffix `.partial`, so leftovers of a killed process can be found
(`remove_partial_files`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time

PARTIAL_SUFFIX = '.partial'


@contextlib.contextmanager
def atomic_write(path, mode: str = 'wb'):
    """Open a temporary file for writing; on success it replaces `path`, on error it is removed."""
    if mode not in ('wb', 'w'):
        raise ValueError(f'atomic_write: mode must be "wb" or "w", got {mode!r}')
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.', suffix=PARTIAL_SUFFIX)
    try:
        with os.fdopen(fd, mode, **({} if 'b' in mode else {'encoding': 'utf-8'})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())         # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_write(path, 'wb') as f:
        f.write(data)


def write_text(path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_write(path, 'w') as f:
        f.write(text)


def remove_partial_files(directory, target: str | None = None, older_than_s: float = 0.0) -> list:
    """Delete the temporary files that killed writers left in `directory`; return their names.

    `target` limits this to the leftovers of one destination file name; `older_than_s` spares
    files modified more recently (a live writer in another process keeps its file fresh).
    """
    prefix = '.' if target is None else f'.{target}.'
    removed = []
    now = time.time()
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if not (name.startswith(prefix) and name.endswith(PARTIAL_SUFFIX)):
                continue
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                if older_than_s and now - os.path.getmtime(path) < older_than_s:
                    continue
                os.unlink(path)
                removed.append(name)
    return removed


def _umask() -> int:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)      # no way to read it without setting it elsewhere
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    # Makes the rename itself durable on POSIX; not possible (and not needed) everywhere.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LockError(RuntimeError):
    """The directory is locked by another live process (the message names it)."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM     # exists, owned by someone else
    return True


class DirectoryLock:
    """An exclusive lock on a directory, held by this process: `<dir>/.lock` holds the pid.

    Created with O_EXCL, so two processes cannot both take it. A lock whose pid no longer runs
    (a killed training run) is stale and is taken over. Use as a context manager or call
    acquire()/release(). Locks are advisory: they keep stylefreq's own tools apart.
    """

    NAME = '.lock'

    def __init__(self, directory, what: str = 'directory'):
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, self.NAME)
        self.what = what
        self.held = False

    def acquire(self):
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                other = self._owner()
                if other is not None and other != os.getpid() and _pid_alive(other):
                    raise LockError(f'{self.what} {self.directory} is in use by process {other} '
                                    f'(remove {self.path} if that process is not stylefreq)') from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)          # stale: its process is gone
                continue
            with os.fdopen(fd, 'w') as f:
                f.write(f'{os.getpid()}\n')
            self.held = True
            return self
        raise LockError(f'could not lock {self.what} {self.directory}: {self.path} keeps reappearing')

    def _owner(self):
        try:
            with open(self.path) as f:
                return int(f.read(32).strip() or '0')
        except (OSError, ValueError):
            return None

    def release(self):
        if self.held:
            if self._owner() == os.getpid():
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
