"""Shared pytest fixtures."""

import http.server
import threading

import pytest

import builders


class _FileServerHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files from the fixture's root, plus a few misbehaving endpoints for download tests:
    /status/<code> answers that HTTP status; /truncated announces more bytes than it sends."""

    def do_GET(self):
        self.server.requests.append(self.path)
        if self.path.startswith('/status/'):
            code = int(self.path.rsplit('/', 1)[1])
            self.send_response(code)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        if self.path == '/truncated':
            self.send_response(200)
            self.send_header('Content-Length', '100000')
            self.end_headers()
            self.wfile.write(b'x' * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


class LocalFileServer:
    """A real HTTP server on 127.0.0.1 (a random free port) serving `root`; stop() shuts it down."""

    def __init__(self, root):
        self.root = root
        handler = lambda *a, **k: _FileServerHandler(*a, directory=str(root), **k)
        self._httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.requests = []
        self.port = self._httpd.server_address[1]
        self.base_url = f'http://127.0.0.1:{self.port}'
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs=dict(poll_interval=0.05),
                                        daemon=True)
        self._thread.start()
        self.running = True

    @property
    def requests(self):
        """Paths requested so far, in order."""
        return list(self._httpd.requests)

    def url(self, name):
        return f'{self.base_url}/{name}'

    def stop(self):
        if self.running:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self.running = False


@pytest.fixture
def http_file_server(tmp_path):
    """A LocalFileServer serving the (initially empty) directory tmp_path/'served'."""
    root = tmp_path / 'served'
    root.mkdir()
    server = LocalFileServer(root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def quick_grids(monkeypatch):
    """Sample grids of 8 images in the training loop (builders.small_grid)."""
    from training import training_loop
    monkeypatch.setattr(training_loop, 'setup_snapshot_image_grid', builders.small_grid)
