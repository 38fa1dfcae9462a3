"""A fault-injecting HTTP proxy in front of a (plain HTTP) registry, for retry, resume and paging tests.

`FaultProxy(registry.url)` listens on 127.0.0.1 and forwards every request. Its attributes say which
faults to inject; tests may change them between calls:

- `drop_blob_after=N, drops=M`: the next M blob downloads send their headers and N bytes, then the
  connection is cut (as a flaky link does).
- `fail_every=k, fail_status=500|429|503`: every k-th request is answered with that status
  (`Retry-After: 0` included) instead of being forwarded.
- `refuse_monolithic=True`: a PUT carrying a whole blob is answered 413; chunked PATCH uploads pass.
- `max_body=N`: any request body over N bytes is answered 413 before it is read, and the connection closed,
  as nginx does with `client_max_body_size` in front of a registry.
- `corrupt_blobs=True`: blob downloads have one byte changed.
- `ignore_range=True`: the Range header is dropped, as by servers that always send the whole blob.
- `tag_page_size=n`: tag lists are paged with `Link` headers, as Docker Hub, Harbor and Distribution 3 do
  (Distribution 2.8 ignores `n`).
- `redirect_blobs_to=URL`: a blob GET or HEAD that the registry would answer (it checked the credentials)
  is answered `307` to the same path at URL instead, as registries with object storage do.
- `blob_status=416` (with `ranged_only=True`: only requests with a Range header): blob GETs get that status.
- `upload_location_to=URL`: the `Location` of an upload session points at URL's host instead.
- `redirect_loop=True`: every request is answered `302` to itself (with a growing `?hop=` query).
- `challenge=HEADER`: every request is answered `401` with `WWW-Authenticate: HEADER`.
- `flood=(pattern, status, content_type)`: a request whose path matches the regex gets that status and a
  chunked body of filler that runs on for `flood_limit` bytes (or until the client hangs up);
  `flood_sent` counts the filler written.

`records` lists each request (method, path, Range and Authorization headers, status, body bytes sent) and
`blob_bytes_served`
counts blob bytes written to clients. The proxy keeps the client's Host header, so the registry's
`Location` answers point back at the proxy.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlencode, urlparse

from servers import InProcessServer

_BLOB_GET = re.compile(r"^/v2/.+/blobs/[a-z0-9]+:[a-f0-9]+$")
_UPLOAD = re.compile(r"^/v2/.+/blobs/uploads/")
_TAGS = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


@dataclass
class Record:
    method: str
    path: str
    range: str | None
    authorization: str | None = None
    status: int = 0
    sent: int = 0  # body bytes written to the client


class FaultProxy(InProcessServer):
    def __init__(
        self,
        upstream: str,
        *,
        drop_blob_after: int | None = None,
        drops: int = 0,
        fail_every: int = 0,
        fail_status: int = 500,
        refuse_monolithic: bool = False,
        max_body: int | None = None,
        corrupt_blobs: bool = False,
        ignore_range: bool = False,
        tag_page_size: int | None = None,
        redirect_blobs_to: str | None = None,
        blob_status: int | None = None,
        ranged_only: bool = False,
        upload_location_to: str | None = None,
        redirect_loop: bool = False,
        challenge: str | None = None,
        flood: tuple[str, int, str] | None = None,
        flood_limit: int = 512 * 1024 * 1024,
    ) -> None:
        parsed = urlparse(upstream)
        assert parsed.scheme == "http", "FaultProxy forwards to plain-HTTP registries"
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
        self.drop_blob_after, self.drops = drop_blob_after, drops
        self.fail_every, self.fail_status = fail_every, fail_status
        self.refuse_monolithic = refuse_monolithic
        self.max_body = max_body
        self.corrupt_blobs = corrupt_blobs
        self.ignore_range = ignore_range
        self.tag_page_size = tag_page_size
        self.redirect_blobs_to = redirect_blobs_to
        self.blob_status, self.ranged_only = blob_status, ranged_only
        self.upload_location_to = upload_location_to
        self.redirect_loop = redirect_loop
        self.challenge = challenge
        self.flood, self.flood_limit, self.flood_sent = flood, flood_limit, 0
        self.records: list[Record] = []
        self.blob_bytes_served = 0
        self._lock = threading.Lock()
        self._serve(_handler_for(self))
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"

    def reset_counts(self) -> None:
        with self._lock:
            self.records.clear()
            self.blob_bytes_served = 0

    def requests_for(self, method: str, pattern: str = "") -> list[Record]:
        return [r for r in list(self.records) if r.method == method and pattern in r.path]

    # -- decisions, taken under the lock so parallel clients see a consistent sequence ------------------

    def _next_record(
        self, method: str, path: str, range_header: str | None, authorization: str | None
    ) -> tuple[Record, bool]:
        with self._lock:
            record = Record(method, path, range_header, authorization)
            self.records.append(record)
            fail = bool(self.fail_every) and len(self.records) % self.fail_every == 0
            return record, fail

    def _take_drop(self) -> int | None:
        with self._lock:
            if self.drops > 0 and self.drop_blob_after is not None:
                self.drops -= 1
                return self.drop_blob_after
            return None

    def _count_blob_bytes(self, count: int) -> None:
        with self._lock:
            self.blob_bytes_served += count

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes]:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.getheaders(), data
        finally:
            connection.close()

    def page_tags(self, path: str, name: str, status: int, headers: list, body: bytes) -> tuple[list, bytes]:
        """Cut a full tag list into pages of `tag_page_size`, linked by `Link: <...>; rel="next"`."""
        if status != 200:
            return headers, body
        query = parse_qs(urlparse(path).query)
        size = int(query.get("n", [self.tag_page_size])[0])
        last = query.get("last", [""])[0]
        tags = sorted(json.loads(body).get("tags") or [])
        remaining = [tag for tag in tags if tag > last]
        page = remaining[:size]
        headers = [(k, v) for k, v in headers if k.lower() != "link"]
        if len(remaining) > size:
            link = f"/v2/{name}/tags/list?{urlencode({'n': size, 'last': page[-1]})}"
            headers.append(("Link", f'<{link}>; rel="next"'))
        return headers, json.dumps({"name": name, "tags": page}).encode()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self._handle()

        do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        def _handle(self) -> None:
            path = urlparse(self.path).path
            record, fail = proxy._next_record(
                self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization")
            )
            if self._answered_by_a_fault(record, path):
                return
            if self._refused_unread(path):
                self.close_connection = True  # the body was not read: the connection cannot be reused
                return self._reply(record, 413, [], b"request entity too large")
            body = self._read_body()
            if fail:
                return self._reply(record, proxy.fail_status, [("Retry-After", "0")], b'{"errors":[]}')
            dropped = _HOP_BY_HOP | ({"range"} if proxy.ignore_range else set())
            headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
            status, answer_headers, data = proxy.forward(self.command, self.path, headers, body)
            if proxy.redirect_blobs_to and _BLOB_GET.match(path) and status in (200, 206):
                location = proxy.redirect_blobs_to.rstrip("/") + self.path
                return self._reply(record, 307, [("Location", location)], b"")
            if proxy.upload_location_to and _UPLOAD.match(path):
                answer_headers = [(k, proxy.upload_location_to.rstrip("/") + urlparse(v).path + "?" + urlparse(v).query)
                                  if k.lower() == "location" else (k, v) for k, v in answer_headers]
            is_blob = self.command == "GET" and _BLOB_GET.match(path) and status in (200, 206)
            tags = _TAGS.match(path)
            if tags and self.command == "GET" and proxy.tag_page_size:
                answer_headers, data = proxy.page_tags(self.path, tags["name"], status, answer_headers, data)
            if is_blob and proxy.corrupt_blobs and data:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            cut = proxy._take_drop() if is_blob else None
            if cut is not None and cut < len(data):
                return self._reply(record, status, answer_headers, data, cut=cut, blob=True)
            self._reply(record, status, answer_headers, data, blob=bool(is_blob))

        def _answered_by_a_fault(self, record: Record, path: str) -> bool:
            """The faults that answer without asking the registry; True when one did."""
            if proxy.flood and re.search(proxy.flood[0], path):
                self._flood(record, proxy.flood[1], proxy.flood[2])
            elif proxy.redirect_loop:
                hop = int(parse_qs(urlparse(self.path).query).get("hop", ["0"])[0]) + 1
                self._reply(record, 302, [("Location", f"{path}?hop={hop}")], b"")
            elif proxy.challenge:
                self._reply(record, 401, [("WWW-Authenticate", proxy.challenge)], b'{"errors":[]}')
            elif (proxy.blob_status and self.command == "GET" and _BLOB_GET.match(path)
                  and (self.headers.get("Range") or not proxy.ranged_only)):
                self._reply(record, proxy.blob_status, [], b'{"errors":[]}')
            else:
                return False
            return True

        def _flood(self, record: Record, status: int, content_type: str) -> None:
            record.status = status
            self.close_connection = True
            self.send_response_only(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            filler = b"x" * (256 * 1024)
            try:
                while proxy.flood_sent < proxy.flood_limit:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(filler), filler))
                    with proxy._lock:
                        proxy.flood_sent += len(filler)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client hung up: what a bounded reader does

        def _refused_unread(self, path: str) -> bool:
            length = int(self.headers.get("Content-Length") or 0)
            if proxy.max_body is not None and length > proxy.max_body:
                return True
            return proxy.refuse_monolithic and self.command == "PUT" and bool(_UPLOAD.match(path)) and length > 0

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _reply(self, record: Record, status: int, headers: list, data: bytes, cut: int | None = None,
                   blob: bool = False) -> None:
            record.status = status
            self.send_response_only(status)
            for key, value in headers:
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            if self.command == "HEAD":
                length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
                self.send_header("Content-Length", length)
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            body = data if cut is None else data[:cut]
            self.wfile.write(body)
            self.wfile.flush()
            record.sent = len(body)
            if blob:
                proxy._count_blob_bytes(len(body))
            if cut is not None:
                # Cut the connection as a failing link would: the client has headers and part of the body.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler
