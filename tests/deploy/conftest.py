import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KEEL_BIN = Path(os.environ.get("KEEL_BIN") or REPO / "build" / "keel")


@pytest.fixture(scope="session")
def keel_metrics_text(tmp_path_factory):
    """/metrics of a freshly started reference service (every family it
    registers at start)."""
    if not KEEL_BIN.exists():
        pytest.skip("build/keel not built")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    work = tmp_path_factory.mktemp("keel")
    env = {"PATH": os.environ.get("PATH", ""), "HOST": "127.0.0.1", "PORT": str(port),
           "KEEL_ENV": "test", "WORKERS": "1"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    p = subprocess.Popen([str(KEEL_BIN), "serve"], cwd=work, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                return urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2).read().decode()
            except OSError:
                if time.time() > deadline or p.poll() is not None:
                    raise
                time.sleep(0.05)
    finally:
        p.terminate()
        p.wait(timeout=30)
