"""libkeel as a library people install: `make install` into a temporary
DESTDIR, then examples/hello-service built from there with nothing but
`pkg-config --cflags --libs keel`, and run. docs/extending.md's link line
comes from the same list as the Makefile's."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SANITIZED = os.environ.get("KEEL_SANITIZED") == "1"


def make(*args, **kw):
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args],
                          capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if SANITIZED:
        pytest.skip("installs the plain build; checked once, in the plain pass")
    dest = tmp_path_factory.mktemp("destdir")
    r = make("install", "DESTDIR=" + str(dest), "PREFIX=/opt/keel")
    assert r.returncode == 0, r.stdout + r.stderr
    return dest / "opt" / "keel"


def test_install_layout(installed):
    assert (installed / "lib" / "libkeel.a").is_file()
    assert (installed / "lib" / "pkgconfig" / "keel.pc").is_file()
    headers = {p.name for p in (installed / "include" / "keel").iterdir()}
    assert headers == {p.name for p in (REPO / "include" / "keel").glob("*.h")}
    pc = (installed / "lib" / "pkgconfig" / "keel.pc").read_text()
    assert "prefix=/opt/keel" in pc


def test_hello_service_builds_from_pkg_config(installed, tmp_path):
    env = dict(os.environ, PKG_CONFIG_PATH=str(installed / "lib" / "pkgconfig"))
    # the .pc names the installed prefix; point it at the staging copy
    pc = subprocess.run(["pkg-config", "--define-variable=prefix=" + str(installed),
                         "--cflags", "--libs", "keel"],
                        capture_output=True, text=True, env=env, check=True).stdout.split()
    assert "-lkeel" in pc and "-I" + str(installed / "include") in pc
    # only the installed headers: not the source tree's include/ or src/
    src = tmp_path / "main.c"
    shutil.copy(REPO / "examples" / "hello-service" / "main.c", src)
    out = tmp_path / "hello-service"
    cc = subprocess.run(["cc", "-std=gnu11", "-Wall", "-Werror", "-o", str(out), str(src), *pc],
                        capture_output=True, text=True, cwd=tmp_path)
    assert cc.returncode == 0, cc.stderr
    v = subprocess.run([str(out), "version"], capture_output=True, text=True, timeout=10)
    assert v.returncode == 0 and "hello-service 1.0.0" in v.stdout
    routes = subprocess.run([str(out), "routes"], capture_output=True, text=True, timeout=10,
                            env={"PATH": os.environ.get("PATH", "")}, cwd=tmp_path)
    assert routes.returncode == 0, routes.stderr
    assert "/greet/:name" in routes.stdout


def test_extending_doc_link_line_matches_makefile():
    line = make("print-ldlibs").stdout.strip()
    doc = (REPO / "docs" / "extending.md").read_text()
    m = re.search(r"^cc .*?my_service\.c (build/libkeel\.a[^\n`]*)$", doc, re.M)
    assert m, "docs/extending.md: no link line for an uninstalled build"
    assert m.group(1).split() == line.split(), (
        "docs/extending.md's link line differs from `make print-ldlibs`: " + line)
