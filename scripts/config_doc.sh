#!/bin/sh
# Regenerates the variable table of docs/configuration.md from the code
# (`build/keel config`); a test keeps the two in sync.
set -eu
cd "$(dirname "$0")/.."
/usr/bin/python3 - <<'PY'
import subprocess
doc = open("docs/configuration.md").read()
start = doc.index("| variable | default | meaning |")
end = doc.find("\n\n", start)
if end < 0:
    end = len(doc.rstrip("\n"))
table = subprocess.run(["build/keel", "config"], capture_output=True, text=True,
                       check=True).stdout.rstrip("\n")
doc = doc[:start] + table + doc[end:]
open("docs/configuration.md", "w").write(doc if doc.endswith("\n") else doc + "\n")
PY
