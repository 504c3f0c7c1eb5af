"""A pass-through proxy in front of the test S3 server that can hold a read: a scan's later ranged reads of an
object wait, so a test can replace the object between two reads of one scan, deterministically. It also records
every request, which :func:`request_kind` sorts into S3's kinds of request (what S3 bills by)."""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class Request:
    """One request the proxy forwarded: its method, its path and query (unquoted), its Range header, whether it
    copies another object (``x-amz-copy-source``), and when it came (epoch seconds)."""

    method: str
    path: str
    range: str | None = None
    copies: bool = False
    at: float = 0.0

    @property
    def kind(self) -> str:
        return request_kind(self)


# S3's kinds of request, in the order reports list them.
KINDS = ("LIST", "HEAD", "GET", "range GET", "PUT", "multipart", "COPY", "DELETE")


def request_kind(request: Request) -> str:
    """The kind (``KINDS``) of an S3 request: a listing, a look-up (HEAD of an object or a bucket), a GET of a
    whole object or of a range, a PUT, a request of a multipart upload (its start, parts and end), a server-side
    copy (a PUT with ``x-amz-copy-source``, or a part copied so), a DELETE (of one object, or of many in one POST)."""
    path, _, query = request.path.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    if "uploads" in params or "uploadId" in params:
        return "COPY" if request.copies else "multipart"
    if request.method == "GET" and ("list-type" in params or path.strip("/").count("/") == 0):
        return "LIST"
    if request.method == "POST" and "delete" in params:
        return "DELETE"
    if request.method == "PUT" and request.copies:
        return "COPY"
    if request.method == "GET" and request.range:
        return "range GET"
    return request.method if request.method in ("HEAD", "GET", "PUT", "DELETE") else f"{request.method} (other)"


def count_kinds(requests: list[Request]) -> Counter:
    """How many of ``requests`` are of each kind."""
    return Counter(request.kind for request in requests)


class HoldingProxy:
    """Forwards every request to ``endpoint`` as it came (its Host header too, which the request's signature
    covers). After :meth:`hold` of an object key, the first GET of a range of that key that is not its end
    (polars reads a Parquet file's footer, ``bytes=-N``, then its row groups) waits until :meth:`release`;
    ``held`` is set while it waits. A download of the whole object (no range) is not held. After :meth:`refuse`
    of a key, its writes are denied; after :meth:`hold_writes` of a key, its first write waits until :meth:`release`
    (``held`` set), then is forwarded or, refused meanwhile, denied (``held_write_done`` set once answered); after
    :meth:`hold_reads` of a key, its first GET of any kind (a footer, a range, the whole object) waits until
    :meth:`release` (``held`` set)."""

    def __init__(self, endpoint: str):
        target = urlsplit(endpoint)
        self._target = (target.hostname, target.port)
        self._key: str | None = None
        self._refused: str | None = None
        self._held_write: str | None = None
        self._held_read: str | None = None
        self._ranged_gets = 0
        self._lock = threading.Lock()
        self.held = threading.Event()
        self.held_write_done = threading.Event()  # the write held is forwarded (or denied) and answered
        self._released = threading.Event()
        self.requests: list[Request] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: with Nagle's algorithm each answer waited for the client's
            # delayed ACK (~40 ms a request on loopback).
            disable_nagle_algorithm = True

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy._record(Request(self.command, unquote(self.path), self.headers.get("Range"),
                                      "x-amz-copy-source" in self.headers, time.time()))
                held_write = proxy._maybe_hold_write(self.command, unquote(self.path))
                proxy._maybe_hold_read(self.command, unquote(self.path))
                try:
                    self._answer(body)
                finally:
                    if held_write:
                        proxy.held_write_done.set()

            def _answer(self, body: bytes):
                if proxy._refuses(self.command, unquote(self.path)):
                    denied = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
                    self.send_response(403, "Forbidden")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(denied)))
                    self.end_headers()
                    self.wfile.write(denied)
                    return
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

    def refuse(self, key: str | None) -> None:
        """Answers every PUT of an object whose key ends with ``key`` with 403 AccessDenied, as S3 does a write
        its policy denies (None: forward them all again)."""
        with self._lock:
            self._refused = key

    def hold_writes(self, key: str) -> None:
        """Holds the first PUT of an object whose key ends with ``key`` until :meth:`release`: a process caught
        in the middle of that write."""
        with self._lock:
            self._held_write = key

    def hold_reads(self, key: str) -> None:
        """Holds the first GET of an object whose key ends with ``key`` until :meth:`release`: a process caught in
        the middle of reading it (a small table polars reads whole with its footer, which :meth:`hold` passes)."""
        with self._lock:
            self._held_read = key

    def _maybe_hold_read(self, method: str, path: str) -> None:
        with self._lock:
            if method != "GET" or self._held_read is None or not path.split("?")[0].endswith(self._held_read):
                return
            self._held_read = None
        self.held.set()
        self._released.wait(60)

    def _maybe_hold_write(self, method: str, path: str) -> bool:
        with self._lock:
            if method != "PUT" or self._held_write is None or not path.split("?")[0].endswith(self._held_write):
                return False
            self._held_write = None
        self.held.set()
        self._released.wait(60)
        return True

    def _refuses(self, method: str, path: str) -> bool:
        with self._lock:
            return method == "PUT" and self._refused is not None and path.split("?")[0].endswith(self._refused)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
        self._maybe_hold(request.method, request.path, request.range)

    def _maybe_hold(self, method: str, path: str, ranged: str | None) -> None:
        with self._lock:
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
