"""Opening paths and URLs, with downloads cached the way StyleGAN2-ADA's dnnlib caches them.

`open_url` accepts a local path, a `file://` URL or an `http(s)://` URL. Downloads go through
`requests` into `<cache>/downloads/<md5(url)>_<name>` (cache root: `set_cache_dir()` >
`$DNNLIB_CACHE_DIR` > `~/.cache/dnnlib`), so files an upstream checkout downloaded are reused and
a cached file needs no network. A download is written to a temporary `.partial` file and renamed
when complete; leftovers of killed downloads are removed before the next attempt.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from stylefreq import files

_cache_dir = None

RETRY_DELAY_S = 1.0           # first back-off between attempts; doubled each time, at most 10 s
CHUNK_BYTES = 1 << 20
TIMEOUT_S = (15, 60)          # (connect, read between chunks)
STALE_PARTIAL_S = 2 * TIMEOUT_S[1]   # a live download touches its file at least this often


class DownloadError(OSError):
    """A URL could not be downloaded (HTTP error status, or the connection failed on every attempt)."""


class _Retry(Exception):
    """A failure worth another attempt (connection trouble, 5xx, truncated body)."""


def set_cache_dir(path):
    """Root of the cache for this process (overrides $DNNLIB_CACHE_DIR); None restores the default."""
    global _cache_dir
    _cache_dir = None if path is None else os.fspath(path)


def make_cache_dir_path(*parts) -> str:
    """Path under the cache root: set_cache_dir() > $DNNLIB_CACHE_DIR > ~/.cache/dnnlib > <tmp>/.cache/dnnlib."""
    if _cache_dir is not None:
        return os.path.join(_cache_dir, *parts)
    if os.environ.get('DNNLIB_CACHE_DIR'):
        return os.path.join(os.environ['DNNLIB_CACHE_DIR'], *parts)
    for home in ('HOME', 'USERPROFILE'):
        if os.environ.get(home):
            return os.path.join(os.environ[home], '.cache', 'dnnlib', *parts)
    return os.path.join(tempfile.gettempdir(), '.cache', 'dnnlib', *parts)


def is_url(s) -> bool:
    return isinstance(s, str) and re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*://', s) is not None


def check_source(s: str) -> None:
    """ValueError (one sentence) unless `s` is a path or a URL that `open_url` can open."""
    if is_url(s):
        scheme = urllib.parse.urlparse(s).scheme.lower()
        if scheme not in ('file', 'http', 'https'):
            raise ValueError(f'{s}: unsupported URL scheme {scheme!r} (use a path, file://, http:// or https://)')


def _local_path(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    path = urllib.request.url2pathname(parsed.path)
    if parsed.netloc and parsed.netloc != 'localhost':
        path = f'//{parsed.netloc}{path}'           # UNC-style file://host/share/...
    if re.match(r'^[/\\][a-zA-Z]:', path):             # file:///C:/x -> C:/x
        path = path[1:]
    return path


def _open_local(path: str, return_filename: bool, what: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f'{what} does not exist')
    if os.path.isdir(path):
        raise IsADirectoryError(f'{what} is a directory, not a file')
    return path if return_filename else open(path, 'rb')


def _file_label(url: str) -> str:
    name = urllib.parse.unquote(os.path.basename(urllib.parse.urlparse(url).path)) or 'download'
    return re.sub(r'[^0-9A-Za-z._-]', '_', name)[:128]


class _ProgressLine:
    """'Downloading name: 12.5 / 100.0 MB' on stderr, rewritten at most five times a second."""

    def __init__(self, label, total, enabled):
        self.label, self.total, self.enabled = label, total, enabled
        self.last = 0.0
        self.printed = False

    def update(self, done):
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and done != self.total):
            return
        self.last = now
        of = f' / {self.total / 2**20:.1f}' if self.total else ''
        sys.stderr.write(f'\rDownloading {self.label}: {done / 2**20:.1f}{of} MB')
        sys.stderr.flush()
        self.printed = True

    def close(self):
        if self.printed:
            sys.stderr.write('\n')
            sys.stderr.flush()


def _fetch_once(url: str, dst, verbose: bool) -> None:
    import requests     # only downloads need it

    progress = None
    try:
        with requests.get(url, stream=True, timeout=TIMEOUT_S) as res:
            if res.status_code != 200:
                msg = f'downloading {url} failed: HTTP {res.status_code} {res.reason or ""}'.rstrip()
                if res.status_code >= 500 or res.status_code in (408, 429):
                    raise _Retry(msg)
                raise DownloadError(msg)
            total = int(res.headers.get('Content-Length') or 0) or None
            progress = _ProgressLine(_file_label(url), total, verbose)
            done = 0
            for chunk in res.iter_content(chunk_size=CHUNK_BYTES):
                dst.write(chunk)
                done += len(chunk)
                progress.update(done)
            # Content-Length counts encoded bytes, iter_content yields decoded ones.
            encoded = res.headers.get('Content-Encoding', 'identity').lower() not in ('', 'identity')
            if total is not None and done != total and not encoded:
                raise _Retry(f'downloading {url} stopped after {done} of {total} bytes')
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise _Retry(f'downloading {url} failed: {type(e).__name__}: {e}') from e
    finally:
        if progress is not None:
            progress.close()


def _fetch(url, dst, num_attempts, verbose):
    for attempt in range(1, num_attempts + 1):
        dst.seek(0)
        dst.truncate()
        try:
            _fetch_once(url, dst, verbose)
            return
        except _Retry as e:
            if attempt == num_attempts:
                plural = 's' if num_attempts > 1 else ''
                raise DownloadError(f'{e} (gave up after {num_attempts} attempt{plural})') from None
            if verbose:
                print(f'{e}; retrying', file=sys.stderr)
        time.sleep(min(RETRY_DELAY_S * 2 ** (attempt - 1), 10.0))


def open_url(url, cache_dir=None, num_attempts=3, verbose=True, return_filename=False, cache=True):
    """Open a local path, a `file://` URL or an `http(s)://` URL (downloaded once into the cache).

    Returns an open binary file object, or the local filename when `return_filename=True`.
    `cache=False` downloads into memory.
    """
    url = os.fspath(url)
    if return_filename and not cache:
        raise ValueError('open_url: return_filename=True needs cache=True (an uncached download has no file)')
    if not is_url(url):
        return _open_local(url, return_filename, url)
    check_source(url)
    if urllib.parse.urlparse(url).scheme.lower() == 'file':
        path = _local_path(url)
        return _open_local(path, return_filename, f'{url} (local file {path})')
    if num_attempts < 1:
        raise ValueError('open_url: num_attempts must be at least 1')

    if not cache:
        buf = io.BytesIO()
        _fetch(url, buf, num_attempts, verbose)
        buf.seek(0)
        return buf

    cache_dir = make_cache_dir_path('downloads') if cache_dir is None else os.fspath(cache_dir)
    url_md5 = hashlib.md5(url.encode('utf-8')).hexdigest()
    # Any '<md5>_*' entry counts, so files that upstream's dnnlib cached are reused as well.
    hits = sorted(glob.glob(os.path.join(glob.escape(cache_dir), url_md5 + '_*')))
    if hits:
        return hits[0] if return_filename else open(hits[0], 'rb')
    os.makedirs(cache_dir, exist_ok=True)
    final_name = f'{url_md5}_{_file_label(url)}'
    files.remove_partial_files(cache_dir, target=final_name, older_than_s=STALE_PARTIAL_S)
    final = os.path.join(cache_dir, final_name)
    with files.atomic_write(final, 'wb') as dst:
        _fetch(url, dst, num_attempts, verbose)
    return final if return_filename else open(final, 'rb')
