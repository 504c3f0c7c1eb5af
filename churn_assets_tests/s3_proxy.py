"""A pass-through proxy in front of the test S3 server that can hold a read: a scan's later ranged reads of an
object wait, so a test can replace the object between two reads of one scan, deterministically."""

from __future__ import annotations

import http.client
import http.server
import threading
from urllib.parse import unquote, urlsplit


class HoldingProxy:
    """Forwards every request to ``endpoint`` as it came (its Host header too, which the request's signature
    covers). After :meth:`hold` of an object key, the first GET of a range of that key that is not its end
    (polars reads a Parquet file's footer, ``bytes=-N``, then its row groups) waits until :meth:`release`;
    ``held`` is set while it waits. A download of the whole object (no range) is not held."""

    def __init__(self, endpoint: str):
        target = urlsplit(endpoint)
        self._target = (target.hostname, target.port)
        self._key: str | None = None
        self._ranged_gets = 0
        self._lock = threading.Lock()
        self.held = threading.Event()
        self._released = threading.Event()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy._maybe_hold(self.command, unquote(self.path), self.headers.get("Range"))
                connection = http.client.HTTPConnection(*proxy._target, timeout=30)
                try:
                    connection.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                    answer = connection.getresponse()
                    data = answer.read()
                finally:
                    connection.close()
                self.send_response(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                # (a HEAD's is the object's length, with no body)
                self.send_header("Content-Length", answer.getheader("Content-Length") or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815 - the http.server API

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def hold(self, key: str) -> None:
        with self._lock:
            self._key, self._ranged_gets = key, 0

    def release(self) -> None:
        self._released.set()

    def _maybe_hold(self, method: str, path: str, ranged: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, ranged))
            if method != "GET" or not ranged or self._key is None or not path.split("?")[0].endswith(self._key):
                return
            if ranged.startswith("bytes=-"):  # the footer
                return
            self._ranged_gets += 1
            wait = self._ranged_gets == 1
        if wait:
            self.held.set()
            self._released.wait(60)

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
