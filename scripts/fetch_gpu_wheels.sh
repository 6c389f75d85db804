#!/usr/bin/env bash
# Download the wheels the bare GPU machine lacks into wheels/ (Python 3.12, manylinux
# x86_64), for scripts/gpu_check.sh. That machine has numpy, scipy, numba, numba-cuda,
# cupy-cuda13x, pytest, pytest-benchmark, hypothesis, typer, rich and matplotlib, and no
# network; the source tree and wheels/ travel together and must stay under 64 MiB.
#
#   scripts/fetch_gpu_wheels.sh [--mc] [--print]
#
# default   SimpleITK (~53 MB), pydicom, icrp107-database, radioactivedecay: the demo and
#           every test run (image IO); no Monte Carlo bench (xraydb does not fit beside
#           SimpleITK)
# --mc      icrp107-database, xraydb with SQLAlchemy, greenlet and platformdirs, pydicom,
#           radioactivedecay (~17 MB): the Monte Carlo bench; no SimpleITK, so no demo and
#           no image-IO tests (the gpu-marked tests and the bench need none)
# --print   print the pip command and exit
# wheels/ is in .gitignore: carry it with the tree (the device tool's `carry: ["wheels"]`).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
LIMIT_BYTES=$(( 64 * 1024 * 1024 ))
MC=0
PRINT=0
for a in "$@"; do
    case "$a" in
        --mc) MC=1 ;;
        --print) PRINT=1 ;;
        *) echo "usage: $0 [--mc] [--print]" >&2; exit 2 ;;
    esac
done
if [ "$MC" = 1 ]; then
    PKGS=(icrp107-database xraydb sqlalchemy greenlet platformdirs pydicom radioactivedecay)
else
    PKGS=(SimpleITK pydicom icrp107-database radioactivedecay)
fi
CMD=("$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12
     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
     --platform manylinux2014_x86_64 -d "$ROOT/wheels" "${PKGS[@]}")
if [ "$PRINT" = 1 ]; then
    echo "${CMD[*]}"
    exit 0
fi
rm -rf "$ROOT/wheels"
mkdir -p "$ROOT/wheels"
"${CMD[@]}"
# what travels: the tree as git sees it (tracked + untracked, not ignored) and wheels/
cd "$ROOT"
TREE=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
WHEELS=$(du -cb wheels/*.whl | tail -1 | cut -f1)
TOTAL=$(( TREE + WHEELS ))
awk -v t="$TREE" -v w="$WHEELS" 'BEGIN {
    printf "tree %.1f MiB + wheels %.1f MiB = %.1f MiB (limit 64 MiB)\n",
        t / 1048576, w / 1048576, (t + w) / 1048576 }'
if [ "$TOTAL" -ge "$LIMIT_BYTES" ]; then
    echo "over the 64 MiB the device machine takes: use --mc, or drop a wheel" >&2
    exit 1
fi
