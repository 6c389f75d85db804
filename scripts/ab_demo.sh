#!/bin/bash
# Interleaved A/B of the whole `voxdose demo`: an earlier commit against this working tree,
# in one run on one machine (a shared machine's load moves both alike).
#   scripts/ab_demo.sh OLD_REF [ROUNDS]      e.g. scripts/ab_demo.sh 8d46d02 4
# Round 0 warms both (Numba caches, kernel cache); read the rounds after it. Prints per
# round and version: wall / user / sys seconds and the stage timings of provenance.json.
set -euo pipefail
old_ref=${1:?usage: scripts/ab_demo.sh OLD_REF [ROUNDS]}
rounds=${2:-4}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/voxdose-ab.XXXXXX)
git -C "$root" worktree add -f -q "$work/old" "$old_ref"
trap 'git -C "$root" worktree remove --force "$work/old"; rm -rf "$work"' EXIT
for ((r = 0; r < rounds; r++)); do
  for v in old new; do
    src="$root/src"; [ "$v" = old ] && src="$work/old/src"
    out="$work/demo_$v"; rm -rf "$out"
    /usr/bin/time -f "%e %U %S" -o "$work/t" env PYTHONPATH="$src" python -m voxdose demo "$out" > /dev/null 2>&1
    stages=$(python - "$out/results/provenance.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["timings_s"]
print(" ".join(f"{k}={v:.2f}" for k, v in t.items()))
PY
)
    echo "round=$r $v wall/user/sys=$(cat "$work/t") $stages"
  done
done
