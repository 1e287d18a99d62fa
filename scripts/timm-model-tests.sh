#!/usr/bin/env bash
# Run timm's own model tests (tests/test_models.py of a clone of huggingface/pytorch-image-models) on
# the seven seed models, TorchScript aside (the models are not scriptable). Needs the timm the
# project installs; the test file of a nearby timm version works (docs/seed-models.md says which).
#
#   bash scripts/timm-model-tests.sh PATH/TO/pytorch-image-models [extra pytest args]
set -euo pipefail
if [ $# -lt 1 ] || [ ! -f "$1/tests/test_models.py" ]; then
  echo "usage: bash scripts/timm-model-tests.sh PATH/TO/pytorch-image-models (a clone holding tests/test_models.py)" >&2
  exit 2
fi
src=$1/tests/test_models.py
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tests"
cp "$src" "$work/tests/"
touch "$work/tests/__init__.py"
# the seed models register with timm on import, before timm's test module lists its models
echo 'import attnbench.models  # noqa: F401' > "$work/conftest.py"
printf '[pytest]\nmarkers =\n    base\n    cfg\n    torchscript\n    features\n    fxforward\n    fxbackward\n    timeout\nfilterwarnings = ignore::pytest.PytestUnknownMarkWarning\n' > "$work/pytest.ini"
cd "$work"
python -m pytest tests/test_models.py -q -p no:cacheprovider -k "biformer and not torchscript" "$@"
