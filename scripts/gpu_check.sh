#!/usr/bin/env bash
# The prepared device check (issue 14): one command, one call, on a bare GPU machine.
#
#   scripts/gpu_check.sh OUTDIR [--device gpu|cpu] [--dry-run]
#
# 1. install   the wheels in wheels/ if there are any (pip --no-index --no-deps; fetch them
#              with scripts/fetch_gpu_wheels.sh), then voxdose itself (an editable install
#              when hatchling is there, else PYTHONPATH=src: the source tree as it is)
# 2. env       versions (Python, NumPy, SciPy, Numba, numba-cuda, CuPy, ...), nvidia-smi,
#              voxdose's device probe
# 3. tests     the gpu-marked tests (pytest -m gpu on the files that hold them)
# 4. bench     voxdose bench --device DEVICE --json, in parts: the convolution one size
#              per step, 64^3-512^3 float32/64, the bi-exponential fit 128^3 and 256^3 x 5 time
#              points, the Monte Carlo in histories/s (the CPU in the same run, transfers
#              apart, against the device's copy bandwidth)
# 5. demo      voxdose demo --device DEVICE, only when SimpleITK and pydicom are installed
#              and enough of the time budget is left
#
# Everything goes into OUTDIR: gpu_check.json (device, versions, per-step status and time,
# the bench JSONs, the pytest counts), gpu_check.log (every step's output),
# bench_convolution_<n>.json, bench_fit_<n>.json, bench_monte_carlo.json, pytest_gpu.xml, and
# demo/ (the demo's JSON and CSV results: provenance with the timings, DVHs; its images and
# the kernel cache stay in a temporary folder).
# Each step runs under `timeout`; the steps share one budget, GPU_CHECK_BUDGET_S seconds
# (default 330, under the issue's 6 minutes on an H100/H200): no step is given more than
# what is left of it. --dry-run: nothing installed, a tiny bench, no Monte Carlo, no demo
# (what CI runs with --device cpu). Exit status 0 when every step that ran passed.
set -u

usage() { echo "usage: $0 OUTDIR [--device gpu|cpu] [--dry-run]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1; shift
DEVICE=gpu
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) [ $# -ge 2 ] || usage; DEVICE=$2; shift 2 ;;
        --device=*) DEVICE=${1#--device=}; shift ;;
        --dry-run) DRY=1; shift ;;
        *) usage ;;
    esac
done
case "$DEVICE" in gpu|cpu) ;; *) usage ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-330}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
STEPS="$OUT/steps.tsv"
: > "$LOG"
: > "$STEPS"
START=$(date +%s)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
WORK=$(mktemp -d)  # kernel cache and the demo's study: large, not for OUTDIR
trap 'rm -rf "$WORK"' EXIT
export VOXDOSE_CACHE_DIR="${VOXDOSE_CACHE_DIR:-$WORK/cache}"
export MPLBACKEND=Agg
cd "$ROOT" || exit 2

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME CAP_S COMMAND...: run COMMAND under `timeout min(CAP_S, time left)`, output into
# the log, one line "name status rc milliseconds timeout command" into steps.tsv
step() {
    local name=$1 cap=$2; shift 2
    local t0 rc status limit
    limit=$(left)
    [ "$cap" -lt "$limit" ] && limit=$cap
    if [ "$limit" -lt 5 ]; then
        printf '%s\tskipped\t\t0\t0\tno time left in the budget\n' "$name" >> "$STEPS"
        return 0
    fi
    echo "=== $name (timeout ${limit}s): $*" >> "$LOG"
    t0=$(date +%s%N)
    timeout --kill-after=5 "$limit" "$@" >> "$LOG" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status=timeout
                 # cut short by the shared budget, not by its own cap: say so
                 [ "$limit" -lt "$cap" ] && status=out_of_budget ;;
        *) status=failed ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" \
        "$(( ($(date +%s%N) - t0) / 1000000 ))" "$limit" "$*" >> "$STEPS"
    echo "=== $name: $status (rc $rc)" >> "$LOG"
}

skip() { printf '%s\tskipped\t\t0\t0\t%s\n' "$1" "$2" >> "$STEPS"; }

# 1. install
if [ "$DRY" = 1 ]; then
    skip install "dry run: nothing installed"
elif ls "$ROOT"/wheels/*.whl > /dev/null 2>&1; then
    step install 60 "$PY" -m pip install --no-index --no-deps --find-links "$ROOT/wheels" \
        "$ROOT"/wheels/*.whl
    if "$PY" -c "import hatchling" > /dev/null 2>&1; then
        step install_voxdose 60 "$PY" -m pip install --no-index --no-deps \
            --no-build-isolation -e "$ROOT"
    else
        skip install_voxdose "no hatchling to build an editable install: PYTHONPATH=src"
    fi
else
    skip install "no wheels/ folder (scripts/fetch_gpu_wheels.sh): what the machine has"
fi

# 2. env
step env 40 "$PY" "$ROOT/scripts/gpu_check_report.py" env "$OUT/env.json"

# 3. tests: the files that hold gpu-marked tests (so that a module needing image IO that
# is not installed cannot stop the collection)
mapfile -t GPU_TESTS < <(grep -l "mark\.gpu" "$ROOT"/tests/test_*.py)
step tests 150 "$PY" -m pytest -m gpu -q -rs --durations=15 -p no:cacheprovider \
    --junitxml="$OUT/pytest_gpu.xml" "${GPU_TESTS[@]}"

# 4. bench in parts, each with its own JSON (one that runs out of time loses only itself):
# the convolution one size per step ("size:cap_s"), the TIA fit per size, the Monte Carlo
if [ "$DRY" = 1 ]; then
    CONV_SIZES=(8:60); CONV=(--repeats 1); FIT=(6); MC=()
else
    CONV_SIZES=(64:30 128:45 256:60 512:40); CONV=(--cpu-max-size 256 --repeats 3)
    FIT=(128 256); MC=(--mc-histories 1000000)
fi
bench() {  # bench NAME CAP ARGS...: voxdose bench --json ARGS > OUT/NAME.json
    local name=$1 cap=$2; shift 2
    step "$name" "$cap" bash -c '"$0" -m voxdose bench --device "$1" --json "${@:3}" > "$2"' \
        "$PY" "$DEVICE" "$OUT/$name.json" "$@"
}
for sc in "${CONV_SIZES[@]}"; do
    bench "bench_convolution_${sc%%:*}" "${sc##*:}" --sizes "${sc%%:*}" "${CONV[@]}" \
        --tia-size 0
done
for n in "${FIT[@]}"; do
    bench "bench_fit_$n" 45 --sizes 0 --tia-size "$n"
done
if [ ${#MC[@]} -gt 0 ]; then
    bench bench_monte_carlo 45 --sizes 0 --tia-size 0 "${MC[@]}"
else
    skip bench_monte_carlo "dry run"
fi

# 5. demo: the whole pipeline, when the image IO is installed and the time is there
if [ "$DRY" = 1 ]; then
    skip demo "dry run"
elif ! "$PY" -c "import SimpleITK, pydicom" > /dev/null 2>&1; then
    skip demo "SimpleITK or pydicom not installed (wheels/: scripts/fetch_gpu_wheels.sh)"
elif [ "$(left)" -lt 60 ]; then
    skip demo "less than 60 s of the budget left"
else
    step demo $(( $(left) - 5 )) "$PY" -m voxdose demo "$WORK/demo" --device "$DEVICE"
    mkdir -p "$OUT/demo"  # the small records of the run; the images stay behind
    cp "$WORK"/demo/results/*.json "$WORK"/demo/results/*.csv "$OUT/demo/" 2> /dev/null
fi

"$PY" "$ROOT/scripts/gpu_check_report.py" report "$OUT" "$DEVICE" "$DRY" \
    "$(( $(date +%s) - START ))"
