#!/usr/bin/env bash
# build-wheels.sh: fill a folder with the wheels a bare, offline GPU machine needs to run attnbench.
#
# What for: the lent GPU machine (Python 3.12, torch 2.11 + CUDA 13, timm, triton, numpy, pandas,
# matplotlib, seaborn, scipy, pyyaml, tqdm, tabulate, pytest, pytest-benchmark; no network) lacks
# pydantic (+ pydantic-core, annotated-types, typing-inspection, a new enough typing-extensions),
# fvcore (+ iopath, yacs, termcolor, portalocker) and natten. This script collects exactly those,
# pinned, as cp312 / py3-none-any wheels, plus attnbench's own wheel, so that over there
#
#     python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#         --target /tmp/site .whl/*.whl
#     export PYTHONPATH="$PWD:/tmp/site"     # the carried source tree first, then the wheels
#     python -m attnbench doctor              # or: attnbench run STUDY.yaml
#
# works. Nothing the machine already has (torch, timm, numpy, ...) is included: the folder is
# about 3 MiB, far under the 64 MiB that may be carried.
#
# Run it here (Linux x86-64, PyPI reachable), from anywhere:
#     scripts/lease/build-wheels.sh            # -> <repo>/.whl/
#     scripts/lease/build-wheels.sh DIR        # -> DIR/
# Environment: PYTHON (default python3) runs pip and the builds; it must import torch >= 2.5 (natten's
# setup.py imports torch) and setuptools >= 64. PYVER (default 3.12) is the target Python version.
# It is idempotent: wheels already present at the pinned version are kept, other versions of the same
# projects are removed, attnbench's wheel is rebuilt from the working tree each time; wheels of other
# projects in the folder are left alone but reported. It exits non-zero with a message if a download
# or build fails, a wheel does not fit cp312 manylinux x86_64, or the folder exceeds 64 MiB.
#
# natten: NATTEN 0.21.7 is on PyPI as an sdist only, and its CUDA library (libnatten) is far too
# big/slow to build for the machine. Its setup.py builds libnatten only when NATTEN_CUDA_ARCH is set
# or torch sees a GPU; otherwise it makes a pure-Python py3-none-any wheel (ext_modules=[]). This
# script builds exactly that (NATTEN_CUDA_ARCH unset, CUDA_VISIBLE_DEVICES=""), and checks that it
# holds no .so. Without libnatten, natten._libnatten.HAS_LIBNATTEN is False, so in
# natten/backends/configs/checks.py every can_run_cutlass_* / hopper / blackwell check returns
# False, and natten.backends.choose_backend() falls through to can_run_flex_attention(): on a CUDA
# tensor (cc >= 70, torch >= 2.7, fp32/fp16/bf16, power-of-two head_dim in [8, 512]) it returns
# "flex-fna", i.e. torch FlexAttention, forward and backward. With torch_compile=False (natten's
# default, and ours) that is torch's UNFUSED flex_attention: it materializes the full N x N score
# matrix (correct, but slow and memory-hungry; not NATTEN's fused kernels). So on that machine our
# backend="natten" runs natten's Flex path (the doctor checks it, forward and backward), while
# backend="auto" sees natten.HAS_LIBNATTEN False and takes "tiled", the project's own path.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$REPO/.whl}
PY=${PYTHON:-python3}
PYVER=${PYVER:-3.12}
LIMIT_MIB=64

# Pinned: the versions installed on this machine (all support Python 3.12).
BINARY=(                      # wheels on PyPI (pydantic-core is the only compiled one)
  pydantic==2.13.4            # attnbench.study (requires the next four)
  pydantic-core==2.46.4
  annotated-types==0.7.0
  typing-inspection==0.4.2
  typing-extensions==4.16.0   # pydantic-core needs >= 4.14.1; the machine's may be older
  yacs==0.1.8                 # fvcore
  termcolor==3.3.0            # fvcore
  portalocker==4.4.2          # iopath
)
SDIST=(                       # pure Python, sdist only on PyPI: built here into py3-none-any wheels
  iopath==0.1.10              # fvcore
  fvcore==0.1.5.post20221221  # attnbench.flops
)
NATTEN=natten==0.21.7         # sdist only; built here without libnatten (see above)

die() { echo "build-wheels: ERROR: $*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "$PY not found (set PYTHON=...)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
LOG=$TMP/pip.log

# run pip quietly; on failure show its log and stop
pip_or_die() {
  local what=$1
  shift
  if ! nice -n 19 "$PY" -m pip "$@" >"$LOG" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -25 >&2
    die "$what failed (pip $*)"
  fi
}

# have SPEC: is a wheel of exactly this name and version already in $OUT?
have() {
  "$PY" - "$OUT" "$1" <<'EOF'
import sys
from pathlib import Path
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
name, _, ver = sys.argv[2].partition("==")
for f in Path(sys.argv[1]).glob("*.whl"):
    n, v, _, _ = parse_wheel_filename(f.name)
    if n == canonicalize_name(name) and str(v) == ver:
        sys.exit(0)
sys.exit(1)
EOF
}

# take DIR SPEC: move the one wheel built/downloaded into DIR to $OUT
take() {
  local found
  found=$(find "$1" -maxdepth 1 -name '*.whl')
  [[ -n $found && $(wc -l <<<"$found") -eq 1 ]] || die "expected one wheel for $2 in $1, got: ${found:-none}"
  mv -f "$found" "$OUT/"
  echo "  + $(basename "$found")"
}

PLATFORMS=()
for n in 28 27 26 25 24 17; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)

echo "build-wheels: filling $OUT (target CPython $PYVER, manylinux x86_64; pip from $PY)"

for spec in "${BINARY[@]}"; do
  if have "$spec"; then echo "  = $spec (present)"; continue; fi
  rm -rf "$TMP/d" && mkdir "$TMP/d"
  pip_or_die "download of $spec" download --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${PLATFORMS[@]}" -d "$TMP/d" "$spec"
  take "$TMP/d" "$spec"
done

for spec in "${SDIST[@]}"; do
  if have "$spec"; then echo "  = $spec (present)"; continue; fi
  rm -rf "$TMP/d" && mkdir "$TMP/d"
  pip_or_die "build of $spec" wheel --no-deps -w "$TMP/d" "$spec"
  take "$TMP/d" "$spec"
done

if have "$NATTEN"; then
  echo "  = $NATTEN (present)"
else
  "$PY" -c 'import sys, torch; sys.exit(0 if [int(x) for x in torch.__version__.split(".")[:2]] >= [2, 5] else 1)' \
    || die "$PY must import torch >= 2.5 to build natten (its setup.py imports torch)"
  rm -rf "$TMP/d" && mkdir "$TMP/d"
  # no NATTEN_CUDA_ARCH and no visible GPU: setup.py sets BUILD_WITH_CUDA=False, ext_modules=[]
  env -u NATTEN_CUDA_ARCH -u NATTEN_IS_BUILDING_DIST CUDA_VISIBLE_DEVICES="" \
    nice -n 19 "$PY" -m pip wheel --no-deps --no-build-isolation --no-binary natten -w "$TMP/d" "$NATTEN" \
    >"$LOG" 2>&1 || { tail -25 "$LOG" >&2; die "build of $NATTEN failed"; }
  take "$TMP/d" "$NATTEN"
fi

# attnbench from the working tree (tracked and untracked files), built in a copy so that the repo
# gets no build/ or *.egg-info
rm -rf "$TMP/src" "$TMP/d" && mkdir -p "$TMP/src" "$TMP/d"
(cd "$REPO" && tar --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md attnbench mechanisms) \
  | tar -xf - -C "$TMP/src"
pip_or_die "build of attnbench" wheel --no-deps --no-build-isolation -w "$TMP/d" "$TMP/src"
find "$OUT" -maxdepth 1 -name 'attnbench-*.whl' -delete
take "$TMP/d" attnbench

# check the folder: one version per project, every wheel installable on cp312 manylinux x86_64,
# natten without libnatten, total size; then list it
MANAGED="${BINARY[*]} ${SDIST[*]} $NATTEN attnbench==*"
"$PY" - "$OUT" "$PYVER" "$LIMIT_MIB" "$MANAGED" <<'EOF'
import sys, zipfile
from pathlib import Path
from pip._vendor.packaging import tags
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename

out, pyver, limit = Path(sys.argv[1]), tuple(int(x) for x in sys.argv[2].split(".")), int(sys.argv[3])
pins = {}
for spec in sys.argv[4].split():
    name, _, ver = spec.partition("==")
    pins[canonicalize_name(name)] = ver
cp = f"cp{pyver[0]}{pyver[1]}"
plats = [f"manylinux_2_{n}_x86_64" for n in range(28, 4, -1)]
plats += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
ok_tags = set(tags.cpython_tags(pyver, [cp], plats)) | set(tags.compatible_tags(pyver, cp, plats))

errors, seen, total, rows = [], {}, 0, []
for f in sorted(out.glob("*.whl")):
    name, ver, _, wtags = parse_wheel_filename(f.name)
    pin = pins.get(name)
    if pin not in (None, "*") and str(ver) != pin:  # another version of a pinned project: drop it
        f.unlink()
        print(f"  - {f.name} (not the pinned {name}=={pin}; removed)")
        continue
    if not wtags & ok_tags:
        errors.append(f"{f.name}: no tag installable on {cp} manylinux x86_64")
    seen.setdefault(name, []).append(f.name)
    if name == "natten":
        so = [n for n in zipfile.ZipFile(f).namelist() if n.endswith(".so")]
        if so:
            errors.append(f"{f.name} holds compiled libnatten {so}: expected the pure-Python build")
    size = f.stat().st_size
    total += size
    rows.append((f.name, size, "" if name in pins else "   <- not built by this script"))
for name, files in seen.items():
    if len(files) > 1:
        errors.append(f"several wheels of {name}: {files}")
for name in pins:
    if name not in seen:
        errors.append(f"missing: {name}")
print(f"build-wheels: {out} holds {len(rows)} wheels:")
for fname, size, note in rows:
    print(f"  {size / 1024:9.1f} KiB  {fname}{note}")
print(f"  total {total / 2**20:.2f} MiB (limit {limit} MiB, wheels and everything else carried)")
if total > limit * 2**20:
    errors.append(f"folder is {total / 2**20:.1f} MiB, over {limit} MiB")
if errors:
    print("build-wheels: ERROR:\n  " + "\n  ".join(errors), file=sys.stderr)
    sys.exit(1)
EOF
