#!/usr/bin/env bash
# Installs the third-party servers the interop tests run, inside this folder only:
#   node/node_modules            the official Socket.IO server (npm ci from package-lock.json)
#   .venvs/chainlit-<version>    one virtualenv per extra Chainlit version
# Re-running is cheap: each part is rebuilt only when its lock or requirements file changed
# (a stamp holds the file's hash). Run by .ci/run; run it by hand to get the tests locally:
#   bash tests/interop/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"

stamp_ok() {  # stamp_ok DIR FILE: DIR was built from FILE's current content
  [ -f "$1/.built-from" ] && [ "$(cat "$1/.built-from")" = "$(sha256sum "$2" | cut -d' ' -f1)" ]
}
stamp() { sha256sum "$2" | cut -d' ' -f1 > "$1/.built-from"; }

build_node() {
  local dir="$here/node"
  if stamp_ok "$dir/node_modules" "$dir/package-lock.json"; then return; fi
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  stamp "$dir/node_modules" "$dir/package-lock.json"
}

build_chainlit() {  # build_chainlit VERSION
  local req="$here/requirements-chainlit-$1.txt" venv="$here/.venvs/chainlit-$1"
  if stamp_ok "$venv" "$req"; then return; fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
  # pip's output goes to a log shown only on failure (a local index config can be noisy)
  # --no-compile: no .pyc for thousands of modules nobody imports (saves a third here)
  if ! "$venv/bin/python" -m pip install --quiet --no-compile --disable-pip-version-check -r "$req" \
      >"$venv/pip.log" 2>&1; then
    tail -30 "$venv/pip.log"; return 1
  fi
  stamp "$venv" "$req"
}

started=$SECONDS
build_node & node_pid=$!
build_chainlit 1.3.2 & v1_pid=$!
build_chainlit 2.0.1 & v2_pid=$!
status=0
for pid in $node_pid $v1_pid $v2_pid; do wait "$pid" || status=1; done
echo "interop servers ready in $((SECONDS - started)) s (status $status)"
exit $status
