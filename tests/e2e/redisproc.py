"""A throw-away redis-server for the e2e tests: a free loopback port, a
temp directory, no persistence (--save '' --appendonly no). The process is
the test's own child: kill() is a crash (SIGKILL), restart() brings it back
on the same port, stop() tears it down."""
import shutil
import socket
import subprocess
import tempfile
import time

from conftest import SLACK, free_port


class RedisServer:
    def __init__(self):
        if not shutil.which("redis-server"):
            raise AssertionError("redis-server is not installed (scripts/deps.sh test)")
        self.dir = tempfile.mkdtemp(prefix="keel-redis-e2e.")
        self.port = None
        self.proc = None
        for _ in range(5):
            self.port = free_port()
            if self._spawn():
                break
        else:
            raise AssertionError("redis-server did not start:\n%s" % self.log())
        self.url = "redis://127.0.0.1:%d/0" % self.port

    def _spawn(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
             "--save", "", "--appendonly", "no", "--logfile", self.dir + "/redis.log"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10 * SLACK
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.command("PING") == "PONG":
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        return False

    def log(self):
        try:
            with open(self.dir + "/redis.log") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def command(self, *args):
        """One command over RESP; the reply decoded (str, int, list, None,
        or an Exception instance for an error reply)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            out = b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            f = s.makefile("rb")
            return _read(f)

    def kill(self):
        """A crash: SIGKILL, no goodbye to the clients."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.kill()
        deadline = time.monotonic() + 10 * SLACK
        while not self._spawn():
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not restart:\n%s" % self.log())
            time.sleep(0.1)

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _read(f):
    line = f.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return Exception(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read(f) for _ in range(n)]
    raise OSError("bad RESP line %r" % line)
