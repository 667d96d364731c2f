"""A small OTLP/HTTP JSON receiver for the tests: POST /v1/traces on a free
loopback port, in a thread of the test process.

    with OtlpReceiver() as rx:
        srv = keel(OTEL_EXPORTER_OTLP_ENDPOINT=rx.url)
        ...
        spans = rx.wait_spans(lambda s: ...)

`mode` decides the answers: "ok" (200, {} or partialSuccess when
`reject` is set), "503" (always 503), or a list of (status, headers)
answers used in turn before "ok" (e.g. [(429, {"Retry-After": "1"})]).
`parse=False` (the benchmark) only reads and counts the bodies.
"""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OtlpReceiver:
    def __init__(self, mode="ok", script=None, parse=True, reject=0):
        self.mode = mode
        self.script = list(script or [])
        self.parse = parse
        self.reject = reject
        self.lock = threading.Lock()
        self.requests = []   # (time, path, headers dict, status answered)
        self.payloads = []   # parsed bodies
        self.bytes = 0
        self.count = 0
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with rx.lock:
                    if rx.script:
                        status, hdrs = rx.script.pop(0)
                    elif rx.mode == "503":
                        status, hdrs = 503, {}
                    else:
                        status, hdrs = 200, {}
                    rx.requests.append((time.monotonic(), self.path,
                                        {k.lower(): v for k, v in self.headers.items()}, status))
                    rx.count += 1
                    rx.bytes += len(body)
                    if status == 200 and rx.parse:
                        rx.payloads.append(json.loads(body))
                answer = b"{}"
                if status == 200 and rx.reject:
                    answer = json.dumps({"partialSuccess": {"rejectedSpans": str(rx.reject),
                                                            "errorMessage": "test"}}).encode()
                self.send_response(status)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                try:
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the exporter went away (an instance killed mid-export)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def resources(self):
        with self.lock:
            return [rs for p in self.payloads for rs in p.get("resourceSpans", [])]

    def spans(self):
        """Every span received, each with "_resource" (a dict of the
        resource's attributes) added."""
        out = []
        for rs in self.resources():
            res = attrs(rs.get("resource", {}).get("attributes", []))
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    s = dict(s)
                    s["_resource"] = res
                    s["_attrs"] = attrs(s.get("attributes", []))
                    out.append(s)
        return out

    def wait_spans(self, pred, n=1, timeout=10.0, slack=1.0):
        """At least n spans satisfying pred (returned), waiting up to timeout."""
        deadline = time.monotonic() + timeout * slack
        while True:
            found = [s for s in self.spans() if pred(s)]
            if len(found) >= n:
                return found
            if time.monotonic() > deadline:
                raise AssertionError("wanted %d matching spans, have %d (of %d received)"
                                     % (n, len(found), len(self.spans())))
            time.sleep(0.05)


def attrs(lst):
    """OTLP attributes [{key, value: {stringValue|intValue|...}}] as a dict."""
    out = {}
    for a in lst:
        v = a.get("value", {})
        for kind in ("stringValue", "intValue", "boolValue", "doubleValue"):
            if kind in v:
                out[a["key"]] = v[kind]
    return out


def main():
    """python3 otlp_receiver.py PORT: a receiver that only counts (for
    bench/trace.sh); prints "requests spans bytes" on SIGTERM/SIGINT. Spans
    are counted by their "spanId" keys, without parsing the JSON."""
    import signal
    import sys
    rx = OtlpReceiver(parse=False)
    rx.httpd.server_close()
    rx.httpd = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), rx.httpd.RequestHandlerClass)
    rx.httpd.daemon_threads = True
    spans = [0]
    handler = rx.httpd.RequestHandlerClass
    orig = handler.do_POST

    def do_post(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        spans[0] += body.count(b'"spanId"')
        with rx.lock:
            rx.count += 1
            rx.bytes += len(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    handler.do_POST = do_post
    assert orig

    def stop(*_):
        print("%d %d %d" % (rx.count, spans[0], rx.bytes), flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rx.httpd.serve_forever()


if __name__ == "__main__":
    main()
