"""Ablation studies (``measure: [accuracy, ...]``): train one backbone per mechanism, compare top-1.

An ablation study (``studies/ablation.yaml`` is the reference)::

    name: ablation
    description: free text
    device: auto              # auto (cuda if available) | cpu | cuda
    threads: 1                # CPU intra-op threads; default: all physical cores
    seed: 0                   # default of train.seeds; FLOP counts and latency inputs
    measure: [accuracy, flops, params]    # accuracy is required; latency is optional
    dataset: {name: pathfinder, resolution: 32, difficulty: easy, train_size: 2560, val_size: 1000}
    backbone: {preset: stl-nano}          # attnbench.ablation.backbone.build_backbone
    train: {epochs: 7, batch: 64, lr: 1.0e-3, seeds: [0, 1]}   # attnbench.ablation.TrainConfig
    mechanisms:               # as in sweep studies; each params list is swept
      - vanilla
      - name: bra
        params: {n_win: [4], topk: [4]}
    plugins: [my_attention.py]

``dataset`` may also be a list of such mappings (every mechanism is trained on each). A study is an
ablation study when its ``measure`` holds ``accuracy`` or it has a ``dataset`` key
(:func:`attnbench.study.load_study` hands it to :func:`check_ablation_study`).

Each (dataset, mechanism, params, seed) is one row of ``results.csv`` (pass ``train``):
:func:`attnbench.ablation.train_and_evaluate` trains in ``RUN_DIR/ablation/<run_key>``, so a
killed run resumes from the last epoch's checkpoint and a finished one is read back from its
``result.json`` without training. ``flops`` are fvcore MACs of the backbone at batch 1 (counted
once per configuration, seeds share it), ``params`` its parameter count, ``latency`` the median of
timed eval forwards at batch 1 on the run device. Resuming by ``point_id``, error rows and Ctrl-C
(exit 130) behave as for sweep studies (:mod:`attnbench.runner`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch
from tqdm import tqdm

from attnbench import __version__
from attnbench.ablation import build_for_dataset, check_run, dataset_shape, run_key, train_and_evaluate
from attnbench.ablation.train import TrainConfig
from attnbench.environment import environment_id, environment_key
from attnbench.flops import count_flops
from attnbench.model_study import EXIT_BAD_INPUT, _plain
from attnbench.registry import get_mechanism
from attnbench.results import LEADING_PARAM_COLUMNS, ResultsStore, move_aside
from attnbench.runner import EXIT_INTERRUPTED, _free, _load_average, _message, _now, _write_report
from attnbench.study import (
    MechanismSpec,
    StudyError,
    _check_mechanisms,
    _Checker,
    _is_int,
    _load_plugins,
    _Map,
    _Seq,
    _suggest,
    _type,
    check_header,
    check_threads_and_seed,
)
from attnbench.timing import fixed_threads, time_function

if TYPE_CHECKING:
    from attnbench.executors import Executor

__all__ = [
    "ABLATION_COLUMNS",
    "ABLATION_COLUMN_DOCS",
    "AblationResultsStore",
    "AblationStudy",
    "check_ablation_study",
    "is_ablation_study",
    "run_ablation_study",
]

TOP_KEYS = (
    "name",
    "description",
    "kind",
    "device",
    "threads",
    "seed",
    "measure",
    "dataset",
    "backbone",
    "train",
    "mechanisms",
    "plugins",
)
MEASURES = ("accuracy", "flops", "params", "latency")
PASS = "train"
LATENCY_REPEATS, LATENCY_WARMUP = 20, 3
# the keys each dataset takes (attnbench.ablation.data reads them; unknown ones are caught here)
_PATHFINDER_EXTRA = ("train_size", "val_size", "seed", "difficulty", "cache_dir")
_DATASET_KEYS = {
    "cifar10": ("root", "train_size", "val_size", "label_type"),
    "cifar100": ("root", "train_size", "val_size", "label_type"),
    "imagefolder": ("root", "resolution", "channels", "train_size", "val_size"),
}

_HEAD_DOCS = {
    "point_id": "hash of the run key (mechanism, params, dataset, backbone, train, seed), the device, "
    "the measures and the environment key; the resume key",
    "env_id": "key into manifest.json 'environments'",
    "study": "study name",
    "mechanism": "registered mechanism name (in every attention stage of the backbone but the last)",
}
_TAIL_DOCS = {
    "seed": "training seed (model init, data order, augmentation)",
    "dataset": "dataset name",
    "resolution": "input image side (pixels)",
    "H": "input image height (pixels; = resolution)",
    "W": "input image width (pixels; = resolution)",
    "C": "empty: the backbone's stages have different widths",
    "num_heads": "empty: the backbone's stages have different head counts",
    "batch": "training batch size",
    "dtype": "float32 (CPU) or bfloat16 autocast (CUDA with train.amp)",
    "device": "cpu or cuda",
    "pass": "train: trained from scratch, then evaluated on the val split",
    "status": "ok | error (message in error)",
    "error": "why the row failed; empty when ok",
    "top1": "top-1 accuracy on the val split, %",
    "top5": "top-5 accuracy on the val split, % (empty for <= 5 classes)",
    "val_loss": "mean cross-entropy on the val split",
    "train_time_s": "seconds spent in training steps (summed over resumed calls)",
    "epochs": "training epochs",
    "final_train_loss": "mean training loss of the last epoch",
    "final_train_acc": "training accuracy of the last epoch, %",
    "dispatch": "JSON list of the backend choices the mechanisms logged",
    "params": "parameters of the whole backbone (elements)",
    "flops": "MACs of one backbone forward at batch 1, fp32, fvcore convention (1 MAC = 1 FLOP)",
    "latency_ms": "median eval forward at batch 1 on the run device, milliseconds",
    "latency_iqr_ms": "inter-quartile range (p75 - p25) of the samples, milliseconds",
    "throughput": "images per second = 1 / median latency",
    "peak_mem_mb": "empty: not measured in an ablation run (the report's sweep plots read the column)",
    "workdir": "the run's folder under the run folder (checkpoint.pt, result.json)",
    "timestamp": "UTC time the row was written",
}
ABLATION_COLUMN_DOCS = {**_HEAD_DOCS, **_TAIL_DOCS}
ABLATION_COLUMNS = list(ABLATION_COLUMN_DOCS)


def is_ablation_study(root: dict[str, Any]) -> bool:
    """True for a parsed study that trains: ``accuracy`` in its ``measure``, or a ``dataset`` key."""
    measure = root.get("measure")
    listed = measure if isinstance(measure, list) else [measure]
    return "dataset" in root or "accuracy" in listed


def param_column(name: str) -> str:
    """The CSV column of a mechanism parameter (prefixed where it would clash with a fixed column)."""
    return f"param_{name}" if name in ABLATION_COLUMN_DOCS else name


# ---------------------------------------------------------------------------------------------
# The validated study


@dataclasses.dataclass(frozen=True)
class AblationStudy:
    """A validated ablation study file."""

    path: Path
    name: str
    description: str
    device: str  # resolved: "cpu" or "cuda"
    requested_device: str
    threads: int | None
    seed: int
    measure: tuple[str, ...]
    datasets: tuple[dict[str, Any], ...]
    backbone: dict[str, Any]
    train: dict[str, Any]  # without seeds
    seeds: tuple[int, ...]
    mechanisms: tuple[MechanismSpec, ...]
    plugins: tuple[Path, ...]
    text: str
    kind: str = "ablation"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def runs(self) -> list[tuple[dict[str, Any], str, dict[str, Any], int]]:
        """Every (dataset, mechanism, params as the study gives them, seed), in run order."""
        return [
            (dataset, spec.name, combo, seed)
            for dataset in self.datasets
            for spec in self.mechanisms
            for combo in spec.combinations()
            for seed in self.seeds
        ]


def _check_dataset(node: Any, line: int, key: str, c: _Checker) -> dict[str, Any] | None:
    """One ``dataset`` mapping: a known name, known keys, and (Pathfinder) valid generator settings."""
    if not isinstance(node, _Map):
        c.add(line, key, f"expected a mapping with 'name' (pathfinder, cifar10, ...), got {_type(node)}")
        return None
    cfg = _plain(node)
    try:
        dataset_shape(cfg)  # the name, and an image folder's classes
    except (ValueError, FileNotFoundError) as exc:
        c.add(node.line_of("name"), key, str(exc))
        return None
    name = cfg["name"]
    if name == "pathfinder":
        from attnbench.ablation.data.pathfinder import PathfinderConfig

        fields = tuple(f.name for f in dataclasses.fields(PathfinderConfig))
        allowed = (*fields, *_PATHFINDER_EXTRA)
    else:
        allowed = _DATASET_KEYS[name]
    ok = True
    for k in node:
        if k not in (*allowed, "name", "augment"):
            where = f"{key}.{k}"
            c.add(
                node.line_of(k),
                where,
                f"unknown key{_suggest(k, list(allowed))} (allowed: {', '.join(allowed)})",
            )
            ok = False
    if ok and name == "pathfinder":
        overrides = {k: cfg[k] for k in fields if k in cfg and k != "resolution"}
        try:
            PathfinderConfig.from_difficulty(
                cfg.get("difficulty", "medium"), cfg.get("resolution", 32), **overrides
            )
        except (ValueError, TypeError) as exc:
            c.add(line, key, str(exc))
            ok = False
    return cfg if ok else None


def check_ablation_study(
    path: Path, shown: str, root: _Map, text: str, problems: list[str], *, device: str | None = None
) -> AblationStudy:
    """Validate a parsed ablation study (called by :func:`attnbench.study.load_study`).

    Every mechanism parameter combination is checked with :func:`attnbench.ablation.check_run`
    (the backbone is built once at the dataset's size); nothing is trained or written.

    Args:
        path: the study file.
        shown: the file as messages name it.
        root: the parsed YAML mapping.
        text: the file's text (hashed into the manifest).
        problems: problems found while parsing (duplicate keys), reported with the rest.
        device: overrides the study's ``device`` (the CLI's ``--device``).

    Raises:
        StudyError: with every problem found, one ``FILE:LINE: KEY: message`` line each.
    """
    c = _Checker(shown)
    c.problems.extend(problems)
    hints = {
        "sweep": "; an ablation study has no sweep (the dataset fixes the input size)",
        "dtype": "; an ablation study trains in fp32 (bf16 autocast on CUDA: train.amp)",
        "batch": "; the batch of an ablation study is train.batch",
        "passes": "; an ablation study trains (pass 'train')",
        "models": "; an ablation study lists mechanisms (models are kind: models)",
    }
    c.unknown_keys(root, TOP_KEYS, "", hints)

    def get(key: str, default: Any) -> tuple[Any, int]:
        return root.get(key, default), root.line_of(key)

    kind, line = get("kind", "ablation")
    if kind not in ("ablation", "sweep"):
        c.add(line, "kind", f"{kind!r}: a study with accuracy in measure or a dataset is kind: ablation")

    name, description, resolved, requested = check_header(root, path, c, device)
    threads, seed = check_threads_and_seed(root, c)
    node, line = get("measure", ["accuracy", "flops", "params"])
    measure = c.choices(node, line, "measure", MEASURES)
    if measure and "accuracy" not in measure:
        c.add(
            line, "measure", "an ablation study trains: list accuracy (with flops, params, latency as wanted)"
        )

    datasets: list[dict[str, Any]] = []
    if "dataset" not in root:
        c.add(root.line, "dataset", "missing; e.g. {name: pathfinder, resolution: 32, difficulty: easy}")
    else:
        node, line = root["dataset"], root.line_of("dataset")
        entries = list(zip(node, node.item_lines)) if isinstance(node, _Seq) else [(node, line)]
        if isinstance(node, _Seq) and not node:
            c.add(line, "dataset", "is an empty list; give at least one dataset mapping")
        for i, (entry, entry_line) in enumerate(entries):
            key = f"dataset[{i}]" if isinstance(node, _Seq) else "dataset"
            cfg = _check_dataset(entry, entry_line, key, c)
            if cfg is not None:
                datasets.append(cfg)
    given = root.get("dataset")
    dataset_ok = bool(datasets) and len(datasets) == (len(given) if isinstance(given, _Seq) else 1)

    backbone, line = get("backbone", None)
    backbone_line = line
    if backbone is None:
        backbone = {}
    elif not isinstance(backbone, _Map):
        c.add(line, "backbone", f"expected a mapping (preset and overrides), got {_type(backbone)}")
        backbone = None
    backbone = _plain(backbone) if backbone is not None else None

    train, line = get("train", None)
    train_line = line
    seeds: list[int] = [seed]
    if train is None:
        train = {}
    elif not isinstance(train, _Map):
        c.add(line, "train", f"expected a mapping (epochs, batch, lr, ..., seeds), got {_type(train)}")
        train = None
    if train is not None:
        if "seeds" in train:
            seeds = _check_seeds(train["seeds"], train.line_of("seeds"), c)
        train = _plain(train)
        try:
            TrainConfig.from_dict(train)
        except (ValueError, TypeError) as exc:
            c.add(train_line, "train", str(exc))
            train = None
        else:
            train.pop("seeds", None)

    before = len(c.problems)
    plugins = _load_plugins(root, path, c)
    mech_node = root.get("mechanisms")
    if isinstance(mech_node, _Seq):
        for i, entry in enumerate(mech_node):
            if isinstance(entry, _Map) and "sweep" in entry:
                c.add(entry.line_of("sweep"), f"mechanisms[{i}].sweep", "an ablation study has no sweep axes")
    specs = _check_mechanisms(root, c, [], [], plugin_failed=len(c.problems) > before)

    if dataset_ok and backbone is not None and train is not None:
        try:  # the backbone mapping itself, with the plainest mechanism
            build_for_dataset("vanilla", {}, datasets[0], backbone)
        except (ValueError, TypeError) as exc:
            c.add(backbone_line, "backbone", _message(exc))
        else:
            _check_runs(specs, mech_node, datasets, backbone, train, c)

    if c.problems:
        raise StudyError(c.problems)
    return AblationStudy(
        path=path,
        name=name,
        description=description,
        device=resolved,
        requested_device=requested,
        threads=threads,
        seed=seed,
        measure=tuple(measure),
        datasets=tuple(datasets),
        backbone=backbone,
        train=train,
        seeds=tuple(seeds),
        mechanisms=tuple(specs),
        plugins=tuple(plugins),
        text=text,
    )


def _check_seeds(node: Any, line: int, c: _Checker) -> list[int]:
    """``train.seeds``: an int >= 0 or a non-empty list of them, duplicates dropped."""
    if isinstance(node, _Seq) and not node:
        c.add(line, "train.seeds", "is an empty list; give at least one seed (an int >= 0)")
        return []
    out = []
    for value, item_line, idx in c.items(node, line):
        if not _is_int(value) or value < 0:
            c.add(item_line, "train.seeds" + idx, f"expected an int >= 0, got {value!r}")
        else:
            out.append(value)
    return list(dict.fromkeys(out))


def _entry_lines(node: Any) -> list[tuple[str, frozenset[str], int, str]]:
    """(name, parameter names, line, key) of each ``mechanisms`` entry, to place a run's problem."""
    out = []
    if not isinstance(node, _Seq):
        return out
    for i, (entry, item_line) in enumerate(zip(node, node.item_lines)):
        if isinstance(entry, str):
            out.append((entry, frozenset(), item_line, f"mechanisms[{i}]"))
        elif isinstance(entry, _Map):
            params = entry.get("params")
            names = frozenset(params) if isinstance(params, dict) else frozenset()
            out.append((entry.get("name"), names, entry.line_of("name"), f"mechanisms[{i}]"))
    return out


def _check_runs(
    specs: list[MechanismSpec],
    node: Any,
    datasets: list[dict[str, Any]],
    backbone: dict[str, Any],
    train: dict[str, Any],
    c: _Checker,
) -> None:
    """``check_run`` for every dataset and parameter combination; problems at the mechanism's line."""
    entries = _entry_lines(node)
    used: set[int] = set()
    for spec in specs:
        keys = frozenset(k for k, _ in spec.grid)
        j = next(
            (j for j, e in enumerate(entries) if j not in used and e[0] == spec.name and e[1] == keys), None
        )
        if j is not None:
            used.add(j)
        line, key = (entries[j][2], entries[j][3]) if j is not None else (0, "mechanisms")
        for combo in spec.combinations():
            for dataset in datasets:
                try:
                    check_run(spec.name, combo, dataset, backbone, train)
                except (ValueError, FileNotFoundError) as exc:
                    combo_text = ", ".join(f"{k}={v}" for k, v in combo.items())
                    on = f" on {dataset['name']}" if len(datasets) > 1 else ""
                    lead = f"with {combo_text}{on}: " if combo_text or on else ""
                    c.add(line, key, f"{lead}{exc}")
                except Exception as exc:  # noqa: BLE001 - a backbone that cannot be built at all
                    c.add(line, key, f"building the backbone failed: {_message(exc)}")


# ---------------------------------------------------------------------------------------------
# The results store of an ablation run


class AblationResultsStore(ResultsStore):
    """:class:`attnbench.results.ResultsStore` with the columns of an ablation run: the fixed ones,
    with the mechanism parameters after ``mechanism`` (as in sweep rows)."""

    @property
    def columns(self) -> list[str]:
        params = [c for c in self._param_columns if c not in ABLATION_COLUMN_DOCS]
        return list(_HEAD_DOCS) + params + list(_TAIL_DOCS)


class _Run:
    """What every row of one run shares."""

    def __init__(self, study: AblationStudy, device: torch.device, threads: int, env: dict[str, Any]) -> None:
        self.study = study
        self.device = device
        self.threads = threads
        self.env = env
        self.env_key = environment_key(env)
        self.env_id = environment_id(env)
        self.flops_cache: dict[str, dict[str, Any]] = {}
        self.param_columns = list(LEADING_PARAM_COLUMNS)
        for spec in study.mechanisms:
            for name in get_mechanism(spec.name).hyperparameters():
                if param_column(name) not in self.param_columns:
                    self.param_columns.append(param_column(name))

    def key(self, dataset: dict[str, Any], mechanism: str, params: dict[str, Any], seed: int) -> str:
        s = self.study
        return run_key(mechanism, params, dataset, s.backbone, s.train, seed)

    def point_id(self, dataset: dict[str, Any], mechanism: str, params: dict[str, Any], seed: int) -> str:
        config = {
            "kind": "ablation",
            "run_key": self.key(dataset, mechanism, params, seed),
            "device": self.device.type,
            "measure": sorted(self.study.measure),
            "environment": self.env_key,
        }
        return hashlib.sha256(json.dumps(config, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def _measure_model(
    run: _Run, dataset: dict[str, Any], mechanism: str, params: dict[str, Any]
) -> dict[str, Any]:
    """FLOPs, params and latency of the untrained backbone (they do not depend on the weights);
    cached per configuration, so that the seeds share one count."""
    study = run.study
    ident = json.dumps([dataset, mechanism, params], sort_keys=True, default=repr)
    if ident in run.flops_cache:
        return run.flops_cache[ident]
    out: dict[str, Any] = {"_errors": []}
    torch.manual_seed(study.seed)
    model = build_for_dataset(mechanism, params, dataset, study.backbone).eval()
    out["params"] = sum(p.numel() for p in model.parameters())
    if "flops" in study.measure:
        try:
            out["flops"] = count_flops(model, model.example_input(1), cross_check=False).total
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            out["_errors"].append(f"flops: {_message(exc)}")
    if "latency" in study.measure:
        try:
            out.update(_latency(model.to(run.device), run.device))
        except Exception as exc:  # noqa: BLE001 - recorded in the row
            out["_errors"].append(f"latency: {_message(exc)}")
    del model
    _free(run.device, collect=False)
    run.flops_cache[ident] = out
    return out


def _latency(model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """Median and IQR of eval forwards at batch 1 on ``device``."""
    x = model.example_input(1)  # (1, in_chans, S, S)

    def step() -> None:
        with torch.no_grad():
            model(x)

    t = time_function(step, device=device, warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS)
    return {
        "latency_ms": round(t.median_ms, 6),
        "latency_iqr_ms": round(t.iqr_ms, 6),
        "throughput": round(t.throughput(1), 4),
    }


def _train_row(
    run: _Run,
    run_dir: Path,
    dataset: dict[str, Any],
    mechanism: str,
    params: dict[str, Any],
    seed: int,
    progress: Any,
) -> dict[str, Any]:
    """The row of one (dataset, mechanism, params, seed); failures become ``status = error``."""
    study = run.study
    key = run.key(dataset, mechanism, params, seed)
    full = {**{k: p.default for k, p in get_mechanism(mechanism).hyperparameters().items()}, **params}
    cfg = TrainConfig.from_dict(study.train)
    side = dataset_shape(dataset)[2]
    row: dict[str, Any] = {
        "point_id": run.point_id(dataset, mechanism, params, seed),
        "env_id": run.env_id,
        "study": study.name,
        "mechanism": mechanism,
        **{param_column(k): "None" if v is None else v for k, v in full.items()},
        "seed": seed,
        "dataset": dataset["name"],
        "resolution": side,
        "H": side,
        "W": side,
        "batch": cfg.batch,
        "dtype": "bfloat16 autocast" if run.device.type == "cuda" and cfg.amp else "float32",
        "device": run.device.type,
        "pass": PASS,
        "workdir": f"ablation/{key}",
    }
    errors: list[str] = []
    try:
        result = train_and_evaluate(
            mechanism,
            params,
            dataset,
            study.backbone,
            study.train,
            seed,
            run.device,
            run_dir / "ablation" / key,
            progress=progress,
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded in the row, the study goes on
        errors.append(f"train: {_message(exc)}")
        _free(run.device)
    else:
        for field in (
            "top1",
            "top5",
            "val_loss",
            "train_time_s",
            "epochs",
            "final_train_loss",
            "final_train_acc",
        ):
            row[field] = result.get(field)
        row["dispatch"] = json.dumps(result.get("dispatch", []))
        row["params"] = result.get("params")
    try:
        measured = _measure_model(run, dataset, mechanism, params)
    except Exception as exc:  # noqa: BLE001 - recorded in the row
        errors.append(f"build: {_message(exc)}")
    else:
        errors.extend(measured["_errors"])
        row.update({k: v for k, v in measured.items() if k != "_errors" and k not in row})
    if "params" not in study.measure:
        row.pop("params", None)
    row.update(status="error" if errors else "ok", error="; ".join(errors) or None, timestamp=_now())
    return row


def _summary(rows: list[dict[str, str]], settings: dict[str, str]) -> str:
    import pandas as pd

    if not rows:
        return "(no rows)"
    df = pd.DataFrame(rows)

    def num(col: str) -> pd.Series:
        return pd.to_numeric(df.get(col, pd.Series(dtype=float)), errors="coerce")

    table = pd.DataFrame(
        {
            "mechanism": df["mechanism"],
            "settings": df["point_id"].map(settings).fillna(""),
            "dataset": df["dataset"] + "-" + df["resolution"],
            "seed": df["seed"],
            "status": df["status"],
            "top1 %": num("top1").round(2),
            "GMACs(fvcore)": (num("flops") / 1e9).round(4),
            "params": num("params").astype("Int64"),
            "train s": num("train_time_s").round(1),
            "note": df["error"].str.slice(0, 60),
        }
    )
    return table.to_string(index=False, na_rep="-")


def run_ablation_study(
    study: AblationStudy,
    *,
    out_dir: str | Path | None = None,
    fresh: bool = False,
    quiet: bool = False,
    report: bool = True,
    command: list[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    executor: Executor | None = None,
) -> int:
    """Train and evaluate every run of ``study`` into ``out_dir`` (default ``results/<name>``).

    Args and the returned codes are those of :func:`attnbench.runner.run_study`, which calls this
    for an ablation study. Training runs in this process: any executor but the local one is refused.

    Raises:
        attnbench.executors.ExecutorError: an executor other than the local one was asked for.
    """
    from attnbench.executors import ExecutorError, LocalExecutor

    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if executor is not None and executor.name != LocalExecutor.name:
        raise ExecutorError(
            f"an ablation study ({study.path}) trains in this process; --executor {executor.name} is for "
            "sweep studies (run it with --executor local, the default)"
        )
    executor = executor or LocalExecutor()
    run_dir = Path(out_dir) if out_dir is not None else Path("results") / study.name
    if fresh:
        moved = move_aside(run_dir)
        if moved is not None:
            print(f"attnbench: --fresh: moved the previous run folder to {moved}", file=out)
    csv_path = run_dir / "results.csv"
    if csv_path.is_file():
        header = csv_path.read_text(encoding="utf-8").split("\n", 1)[0].split(",")
        if "model" in header or ("mechanism" in header and "top1" not in header):
            print(
                f"attnbench run: {run_dir} holds another kind of run (no top1 column); give an ablation "
                "study its own folder with --out, or start over with --fresh",
                file=err,
            )
            return EXIT_BAD_INPUT
    device = torch.device(study.device)
    resume_cmd = shlex.join(
        ["attnbench", "run", str(study.path), "--out", str(run_dir), "--device", study.requested_device]
    )

    with executor.start(study, device) as setup, fixed_threads(setup.threads):  # type: ignore[arg-type]
        run = _Run(study, device, setup.threads, setup.env)
        store = AblationResultsStore(run_dir)
        store.add_param_columns(run.param_columns)
        store.flush()  # the CSV exists (header at least) from the start
        manifest = _start_manifest(store, run, command)
        record = manifest["runs"][-1]
        runs = study.runs()
        ids = [run.point_id(*r) for r in runs]
        done = sum(store.is_done(i) for i in set(ids))
        stale = sum(1 for r in store.rows if r["point_id"] not in set(ids))
        if not quiet:
            print(
                f"attnbench: ablation study {study.name!r}: {len(runs)} trainings "
                f"({len(study.seeds)} seeds) on {device.type} ({setup.env['device_name']}, {setup.threads} "
                f"threads) -> {run_dir}",
                file=out,
            )
            if done:
                print(f"attnbench: resuming: {done} runs already finished are kept", file=out)
        if stale:
            print(
                f"attnbench: note: {stale} rows in {store.csv_path} belong to another configuration "
                "(edited study or other machine); they are kept (--fresh starts over)",
                file=out,
            )
        todo = [(r, pid) for r, pid in zip(runs, ids) if not store.is_done(pid)]
        bar = tqdm(total=len(todo), unit="run", disable=quiet, file=err, dynamic_ncols=True)

        def progress(line: str) -> None:
            bar.write(line, file=err)

        try:
            for (dataset, mechanism, params, seed), _ in todo:
                label = " ".join([mechanism, *(f"{k}={v}" for k, v in params.items()), f"seed {seed}"])
                bar.set_description_str(label)
                store.add(
                    _train_row(run, run_dir, dataset, mechanism, params, seed, None if quiet else progress)
                )
                record["rows_written"] += 1
                bar.update(1)
        except KeyboardInterrupt:
            bar.close()
            record.update(status="interrupted", finished=_now(), load_average_end=_load_average())
            store.write_manifest(manifest)
            print(
                f"\nattnbench: interrupted; {len(store.rows)} rows are saved in {store.csv_path} and the "
                f"unfinished training's last epoch in {run_dir / 'ablation'}\n"
                f"attnbench: resume with: {resume_cmd}",
                file=err,
            )
            return EXIT_INTERRUPTED
        bar.close()
        record.update(status="completed", finished=_now(), load_average_end=_load_average())
        store.write_manifest(manifest)

    wanted = set(ids)
    mine = [{c: r.get(c, "") for c in store.columns} for r in store.rows if r["point_id"] in wanted]
    counts = {s: sum(r["status"] == s for r in mine) for s in ("ok", "error")}
    if not quiet:
        settings = {pid: " ".join(f"{k}={v}" for k, v in r[2].items()) for r, pid in zip(runs, ids)}
        print(_summary(mine, settings), file=out)
    print(f"attnbench: {counts['ok']} ok, {counts['error']} errors; results in {store.csv_path}", file=out)
    if report:
        _write_report(run_dir, err)
    return 0


def _start_manifest(store: AblationResultsStore, run: _Run, command: list[str] | None) -> dict[str, Any]:
    study = run.study
    manifest = store.read_manifest() or {"created": _now(), "environments": {}, "runs": []}
    manifest.update(
        attnbench_version=__version__,
        updated=_now(),
        study={
            "name": study.name,
            "kind": study.kind,
            "description": study.description,
            "path": str(study.path),
            "sha256": study.sha256,
            "text": study.text,
        },
        conditions={
            "datasets": list(study.datasets),
            "backbone": study.backbone,
            "train": dataclasses.asdict(TrainConfig.from_dict(study.train)),
            "seeds": list(study.seeds),
            "device": run.device.type,
            "pass": PASS,
        },
        device=run.device.type,
        requested_device=study.requested_device,
        threads=run.threads,
        protocol={
            "measure": sorted(study.measure),
            "threads": run.threads,
            "seed": study.seed,
            "passes": [PASS],
            "accuracy": "attnbench.ablation.train_and_evaluate: trained from scratch per seed, top-1/top-5 "
            "on the val split after the last epoch; checkpoint and result.json in the row's workdir",
            "flops": "fvcore MACs (1 MAC = 1 FLOP) of one backbone forward at batch 1 in fp32 on CPU",
            "latency": f"eval mode under torch.no_grad() at batch 1, {LATENCY_WARMUP} untimed calls, then "
            f"{LATENCY_REPEATS} samples; median and IQR in ms",
        },
        columns=ABLATION_COLUMN_DOCS,
    )
    manifest.setdefault("environments", {})[run.env_id] = run.env
    manifest.setdefault("runs", []).append(
        {
            "started": _now(),
            "finished": None,
            "status": "running",
            "env_id": run.env_id,
            "study_sha256": study.sha256,
            "command": command,
            "rows_written": 0,
            "load_average_start": _load_average(),
        }
    )
    store.write_manifest(manifest)
    return manifest
