"""A CPU-sized copy of a GPU-lease study, for the lease's rehearsal (``scripts/gpu-lease.sh --tiny``).

Usage: ``python scripts/lease/tiny_study.py OUT_DIR STUDY.yaml...`` (writes ``OUT_DIR/<name>.yaml``).
The copy keeps the study's kind, measures and passes, so the same code paths run, on CPU, in
seconds: the first two mechanisms entries (one, and one pass, where a study compiles), 28 px,
C = 32, 2 heads, float32, batch 2, two samples per row, a 64 MiB memory budget for a max-batch
search capped at 4. The full study is validated too (on CPU, with a memory budget for
a max-batch search), so that a typo in it fails the rehearsal.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

TINY_SHAPE = {"resolution": 28, "dim": 32, "num_heads": 2}


def _listed(value: object) -> list:
    return list(value) if isinstance(value, list) else [value]


def tiny(study: dict) -> dict:
    out = dict(study)
    out.update(device="cpu", dtype="float32", threads=1, repeats=2, warmup=0, max_time_s=0.2)
    out["name"] = f"{study['name']}-tiny"
    out["mechanisms"] = study["mechanisms"][:2]
    if any(mode != "none" for mode in _listed(study.get("compile", "none"))):
        out["mechanisms"], out["passes"] = (
            study["mechanisms"][:1],
            _listed(study.get("passes", "forward"))[:1],
        )
    if "batch" in study:
        out["batch"] = 2
    if "shapes" in study:
        out["shapes"] = [dict(TINY_SHAPE)]
        out["mechanisms"] = [
            {**m, "shapes": [dict(TINY_SHAPE)]} if isinstance(m, dict) else m for m in out["mechanisms"]
        ]
    if "sweep" in study:
        out["sweep"] = {"resolution": [28], "dim": [32], "num_heads": [2]}
    if "max_batch" in study.get("measure", []):
        out.update(memory_budget_mib=64, max_batch_cap=4)
    return out


def main(argv: list[str]) -> int:
    import attnbench  # noqa: F401 - torchvision's CPU-wheel workaround before the study loader
    from attnbench.study import StudyError, load_study

    if len(argv) < 2:
        print("usage: tiny_study.py OUT_DIR STUDY.yaml...", file=sys.stderr)
        return 2
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in map(Path, argv[1:]):
        study = yaml.safe_load(src.read_text())
        full = {**study, "device": "cpu"}  # the whole study, validated as far as a CPU can
        if "max_batch" in study.get("measure", []):
            full.setdefault("memory_budget_mib", 64)  # on CPU a max-batch search needs a budget
        for data, path in ((full, out_dir / f"{src.stem}.full.yaml"), (tiny(study), out_dir / src.name)):
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            try:
                load_study(path)
            except StudyError as exc:
                print(f"tiny_study: {src} ({path.name}) is not valid:\n{exc}", file=sys.stderr)
                return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
