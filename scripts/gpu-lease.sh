#!/usr/bin/env bash
# gpu-lease.sh: everything attnbench measures on a GPU, in one command of under 9 minutes from a bare
# machine (docs/running.md#a-gpu-lease). Stages, each with its own time limit, so that one that
# overruns is stopped (SIGTERM: its rows are kept, a second call resumes it) and the rest still run:
#
#   stage        limit  what
#   install        60s  pip install the carried wheels (scripts/lease/build-wheels.sh) into /tmp/site
#   environment    30s  nvidia-smi, torch.utils.collect_env
#   doctor         90s  attnbench doctor --device cuda, float32 and bfloat16 (all twelve mechanisms)
#   gpu-tests      60s  pytest -m gpu (the GPU-marked tests)
#   sweep         150s  studies/gpu-lease/sweep.yaml: every mechanism, eager, fp32/bf16, fwd and fwd+bwd
#   peers          60s  studies/gpu-lease/peers.yaml: BRA's backends against the released BRA
#   compiled       90s  studies/gpu-lease/compiled.yaml: torch.compile (default) for BRA, vanilla, Swin
#   frontier       30s  studies/gpu-lease/frontier.yaml: the largest batch of vanilla, BRA and Swin
#   pack                one archive, $OUT/gpu-lease.tar.gz (<= 16 MiB), and its stage table
#
# The limits sum to 570 s; the stages after install usually end well inside theirs.
#
# Usage:
#   scripts/gpu-lease.sh [--device cuda|cpu] [--tiny] [--out DIR] [--wheels DIR]
#     --device  where to measure (default cuda)
#     --tiny    the CPU rehearsal: no wheel install, the doctor on BRA (its five backends), the GPU tests
#               collected only, and CPU-sized copies of the studies (scripts/lease/tiny_study.py);
#               under a minute (tests/test_gpu_lease.py runs it)
#     --out     where the archive goes (default: $OUT when set, else lease-out/)
#     --wheels  the wheel folder to install (default .whl; absent: nothing is installed)
# Exit status: 0 when every stage ended with 0, else 1 (the archive is written either way); 2 for bad
# arguments.
set -uo pipefail

device=cuda
tiny=0
out=${OUT:-lease-out}
wheels=.whl
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=${2:?--device needs cuda or cpu}; shift 2 ;;
    --tiny) tiny=1; shift ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --wheels) wheels=${2:?--wheels needs a folder}; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-lease.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$device" in cuda|cpu) ;; *) echo "gpu-lease.sh: --device must be cuda or cpu, not '$device'" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.." || exit 2
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
work="$out/lease"
rm -rf "$work"
mkdir -p "$work"
t0=$(date +%s)
failed=0
printf 'stage\trc\tseconds\tlimit_s\n' > "$work/stages.tsv"
say() { echo "[gpu-lease +$(( $(date +%s) - t0 ))s] $*"; }

# stage NAME LIMIT_S COMMAND...: run it with its limit, its output in $work/NAME.log, its row in stages.tsv
stage() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  say "$name (limit ${limit}s): $*"
  timeout --signal=TERM --kill-after=20 "$limit" "$@" > "$work/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$limit" >> "$work/stages.tsv"
  [ "$rc" -eq 0 ] || failed=1
  say "$name: exit $rc ($(( $(date +%s) - start ))s); last lines:"
  tail -n 3 "$work/$name.log" | cut -c1-200 | sed 's/^/    /'
}

site=""
if [ "$tiny" -eq 0 ] && [ -d "$wheels" ]; then
  stage install 60 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$wheels"/*.whl
  site=":/tmp/site"
fi
export PYTHONPATH="$PWD$site${PYTHONPATH:+:$PYTHONPATH}"  # the carried source tree first, then the wheels
export PYTHONUNBUFFERED=1
ab=(python3 -m attnbench)

if [ "$tiny" -eq 1 ]; then
  stage environment 30 python3 -c "import torch, sys; print(sys.version); print(torch.__version__, torch.cuda.is_available())"
  stage doctor 60 "${ab[@]}" doctor --device "$device" --quick --threads 1 --mechanism bra --out "$work/doctor"
  stage gpu-tests 60 python3 -m pytest -m gpu -q -p no:cacheprovider --co tests/test_bra.py tests/test_swin.py
  stage studies 30 python3 scripts/lease/tiny_study.py "$work/studies" studies/gpu-lease/{sweep,peers,compiled,frontier}.yaml
  for s in sweep peers compiled frontier; do
    stage "$s" 60 "${ab[@]}" run "$work/studies/$s.yaml" --out "$work/$s" --device "$device" --no-report --quiet \
      --isolation none  # in this process: a worker's start-up would double a tiny study's time
  done
else
  stage environment 30 sh -c "nvidia-smi; python3 -m torch.utils.collect_env"
  stage doctor 90 "${ab[@]}" doctor --device "$device" --dtype float32 --dtype bfloat16 --out "$work/doctor"
  stage gpu-tests 60 python3 -m pytest -m gpu -q -p no:cacheprovider tests
  stage sweep 150 "${ab[@]}" run studies/gpu-lease/sweep.yaml --out "$work/sweep" --device "$device" --no-report --quiet
  stage peers 60 "${ab[@]}" run studies/gpu-lease/peers.yaml --out "$work/peers" --device "$device" --no-report --quiet
  stage compiled 90 "${ab[@]}" run studies/gpu-lease/compiled.yaml --out "$work/compiled" --device "$device" \
    --no-report --quiet
  stage frontier 30 "${ab[@]}" run studies/gpu-lease/frontier.yaml --out "$work/frontier" --device "$device" \
    --no-report --quiet
fi

# pack: rows, manifests, logs and tables (no checkpoints, no plots: reports are written back here)
say "pack"
cp "$work/stages.tsv" "$out/stages.tsv"
tar -czf "$out/gpu-lease.tar.gz" -C "$out" --exclude='*.pt' --exclude='*.png' --exclude='*.svg' --exclude='*.pdf' \
  --exclude='.attnbench.lock' lease
size=$(stat -c %s "$out/gpu-lease.tar.gz")
if [ "$size" -gt $(( 16 * 1024 * 1024 )) ]; then
  echo "gpu-lease.sh: the archive is $size bytes, over 16 MiB: it would not come back" >&2
  failed=1
fi
say "done: $out/gpu-lease.tar.gz ($size bytes); stages:"
column -t "$out/stages.tsv" 2>/dev/null || cat "$out/stages.tsv"
exit "$failed"
