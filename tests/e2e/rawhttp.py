"""rawhttp — a few bytes-level HTTP/1.1 helpers for the e2e suite.

The protocol tests must control every byte they send and see every byte the
server answers, so they do not use an HTTP client library: `raw()` writes
bytes to a fresh connection and reads until EOF, a timeout, or a given number
of complete responses; `parse_responses()` splits what came back into
responses (status, headers, body) using Content-Length or chunked framing.
"""
import json
import re
import socket
import time

_STATUS_LINE = re.compile(rb"^HTTP/(\d)\.(\d) (\d{3})(?: (.*))?$")


class Response:
    def __init__(self, version, status, reason, headers, body, raw):
        self.version = version  # "1.1"
        self.status = status
        self.reason = reason
        self.header_list = headers  # [(name, value)] as sent, str
        self.body = body  # bytes (chunked bodies decoded)
        self.raw = raw  # the bytes of the whole response

    def header(self, name, default=None):
        """The value of the one field `name` (case-insensitive); several
        fields are joined with ", "."""
        vals = self.headers_all(name)
        return ", ".join(vals) if vals else default

    def headers_all(self, name):
        n = name.lower()
        return [v for k, v in self.header_list if k.lower() == n]

    def has(self, name):
        return bool(self.headers_all(name))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.header_list, self.body[:200])


class Incomplete(Exception):
    pass


def _parse_one(data, pos, is_head):
    """Parses one response starting at pos. Returns (Response, newpos) or
    raises Incomplete; `until_eof` bodies need the whole data to be final."""
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        raise Incomplete()
    head = data[pos:end].split(b"\r\n")
    m = _STATUS_LINE.match(head[0])
    if not m:
        raise ValueError("bad status line: %r" % head[0][:200])
    version = "%s.%s" % (m.group(1).decode(), m.group(2).decode())
    status = int(m.group(3))
    reason = (m.group(4) or b"").decode("latin-1")
    headers = []
    for line in head[1:]:
        if b":" not in line:
            raise ValueError("bad header line: %r" % line[:200])
        k, v = line.split(b":", 1)
        if k != k.strip() or not k:
            raise ValueError("bad header name: %r" % line[:200])
        headers.append((k.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
    body_start = end + 4
    lower = {k.lower(): v for k, v in headers}
    te = lower.get("transfer-encoding", "").lower()
    if is_head or 100 <= status < 200 or status in (204, 304):
        return Response(version, status, reason, headers, b"", data[pos:body_start]), body_start
    if "chunked" in te:
        p = body_start
        body = b""
        while True:
            le = data.find(b"\r\n", p)
            if le < 0:
                raise Incomplete()
            size = int(data[p:le].split(b";")[0].strip(), 16)
            p = le + 2
            if size == 0:
                # trailers until an empty line
                while True:
                    le = data.find(b"\r\n", p)
                    if le < 0:
                        raise Incomplete()
                    line = data[p:le]
                    p = le + 2
                    if not line:
                        break
                return Response(version, status, reason, headers, body, data[pos:p]), p
            if len(data) < p + size + 2:
                raise Incomplete()
            body += data[p:p + size]
            if data[p + size:p + size + 2] != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
            p += size + 2
    if "content-length" in lower:
        n = int(lower["content-length"])
        if len(data) < body_start + n:
            raise Incomplete()
        return (Response(version, status, reason, headers, data[body_start:body_start + n],
                         data[pos:body_start + n]), body_start + n)
    # No framing: the body runs to the end of the connection.
    return Response(version, status, reason, headers, data[body_start:], data[pos:]), len(data)


def parse_responses(data, methods=None, eof=True, interim=False):
    """Splits `data` into responses. methods[i] is the method of the i-th
    request (for HEAD, whose responses have no body). Interim 1xx responses
    are dropped unless interim=True. Returns (responses, rest) where rest is
    the unparsed tail (an incomplete response)."""
    out = []
    pos = 0
    final_index = 0
    while pos < len(data):
        is_head = bool(methods) and final_index < len(methods) and methods[final_index] == "HEAD"
        try:
            resp, newpos = _parse_one(data, pos, is_head)
        except Incomplete:
            break
        lower = {k.lower() for k, _ in resp.header_list}
        if (newpos == len(data) and not eof and "content-length" not in lower
                and "transfer-encoding" not in lower and not is_head
                and not (100 <= resp.status < 200 or resp.status in (204, 304))):
            break  # read-until-close body, connection still open
        pos = newpos
        if 100 <= resp.status < 200:
            if interim:
                out.append(resp)
            continue
        out.append(resp)
        final_index += 1
    return out, data[pos:]


class Exchange:
    """What came back on one connection."""

    def __init__(self, data, eof, reset, elapsed, methods):
        self.data = data
        self.eof = eof  # the server closed (FIN or RST)
        self.reset = reset  # ...with a reset
        self.elapsed = elapsed
        self.methods = methods

    @property
    def responses(self):
        return parse_responses(self.data, self.methods, eof=self.eof)[0]

    @property
    def rest(self):
        return parse_responses(self.data, self.methods, eof=self.eof)[1]

    @property
    def statuses(self):
        return [r.status for r in self.responses]

    def __repr__(self):
        return "<Exchange eof=%s reset=%s elapsed=%.2f data=%r>" % (
            self.eof, self.reset, self.elapsed, self.data[:600])


def connect(port, timeout=5.0, source=None):
    """A connection to 127.0.0.1:port, from `source` (another loopback
    address, e.g. "127.0.0.2", to be a different client) when given."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_exchange(sock, timeout=3.0, expect=None, methods=None, start=None):
    """Reads from sock until EOF, `timeout` seconds, or `expect` complete
    final responses."""
    start = start or time.monotonic()
    deadline = time.monotonic() + timeout
    data = b""
    eof = reset = False
    while True:
        if expect is not None and len(parse_responses(data, methods, eof=False)[0]) >= expect:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, ConnectionAbortedError):
            eof = reset = True
            break
        if not chunk:
            eof = True
            break
        data += chunk
    return Exchange(data, eof, reset, time.monotonic() - start, methods)


def send_tolerant(sock, data):
    """sendall that tolerates the server closing early (it may refuse a
    request before reading all of it). Returns False if the send failed."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
        return False


def raw(port, data, timeout=3.0, expect=None, methods=None, source=None):
    """Sends `data` on a fresh connection and reads until EOF, `timeout`
    seconds, or (when given) `expect` complete final responses."""
    start = time.monotonic()
    with connect(port, source=source) as s:
        send_tolerant(s, data)
        return read_exchange(s, timeout=timeout, expect=expect, methods=methods, start=start)


def request(method="GET", target="/hello", headers=None, body=b"", version="1.1",
            host="localhost"):
    """Builds request bytes; Content-Length is added for a non-empty body
    unless the headers carry framing already."""
    lines = ["%s %s HTTP/%s" % (method, target, version)]
    hdrs = list(headers or [])
    names = {k.lower() for k, _ in hdrs}
    if host is not None and "host" not in names:
        hdrs.insert(0, ("Host", host))
    if isinstance(body, str):
        body = body.encode()
    if body and "content-length" not in names and "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    for k, v in hdrs:
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def get(port, target="/hello", headers=None, timeout=5.0, method="GET", body=b"",
        source=None):
    """One request on a fresh connection; returns the Response (or fails)."""
    data = request(method, target, headers, body)
    ex = raw(port, data, timeout=timeout, expect=1, methods=[method], source=source)
    rs = ex.responses
    if not rs:
        raise AssertionError("no response to %s %s: %r" % (method, target, ex))
    return rs[0]


def chunked(body, sizes=None, ext=b"", trailers=b""):
    """Encodes `body` in chunks of the given sizes (default one chunk)."""
    if isinstance(body, str):
        body = body.encode()
    sizes = sizes or [len(body)]
    out = b""
    p = 0
    for n in sizes:
        part = body[p:p + n]
        p += n
        if part:
            out += b"%x%s\r\n%s\r\n" % (len(part), ext, part)
    if p < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - p, body[p:])
    return out + b"0\r\n" + trailers + b"\r\n"


def is_closed(sock, timeout=0.3):
    """True if the peer closed (EOF or reset) within timeout, False if the
    connection stays open and silent. Raises if data arrives."""
    sock.settimeout(timeout)
    try:
        chunk = sock.recv(65536)
    except socket.timeout:
        return False
    except (ConnectionResetError, ConnectionAbortedError):
        return True
    if chunk:
        raise AssertionError("unexpected bytes on an idle connection: %r" % chunk[:300])
    return True


def assert_problem(resp, status):
    """The response is an RFC 9457 problem document with this status."""
    assert resp.status == status, resp
    ctype = resp.header("Content-Type", "")
    assert ctype.split(";")[0].strip().lower() == "application/problem+json", resp
    doc = resp.json()
    for key in ("type", "title", "status", "detail"):
        assert key in doc, (key, doc)
    assert doc["status"] == status, doc
    assert isinstance(doc["title"], str) and doc["title"], doc
    assert isinstance(doc["detail"], str), doc
    if "request_id" in doc and resp.has("X-Request-Id"):
        assert doc["request_id"] == resp.header("X-Request-Id"), (doc, resp)
    return doc


def assert_serving(port):
    """A good request on a fresh connection still succeeds."""
    r = get(port, "/hello")
    assert r.status == 200 and r.body == b"ok", r
