#!/bin/sh
# Regenerates the reference section of docs/configuration.md (everything
# from the first "### " module heading to the end) from the registry
# (`build/keel config`); a test keeps the two in sync.
set -eu
cd "$(dirname "$0")/.."
/usr/bin/python3 - <<'PY'
import subprocess
doc = open("docs/configuration.md").read()
start = doc.find("\n### ")
doc = doc.rstrip("\n") + "\n\n" if start < 0 else doc[:start + 1]
ref = subprocess.run(["build/keel", "config"], capture_output=True, text=True,
                     check=True).stdout
open("docs/configuration.md", "w").write(doc + ref)
PY
