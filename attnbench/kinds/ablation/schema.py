"""Ablation studies (``kind: ablation``, or ``accuracy`` in ``measure``, or a ``dataset``): one
backbone trained per mechanism, compared by top-1.

The settings are checked by :mod:`attnbench.ablation` itself (:func:`~attnbench.ablation.dataset_shape`,
:class:`~attnbench.ablation.TrainConfig`, :func:`~attnbench.ablation.build_for_dataset`,
:func:`~attnbench.ablation.check_run`), imported when an ablation study is read or the schema written.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import InitErrorDetails, core_schema

from attnbench.study._fields import (
    NonNegativeInt,
    OneOrMany,
    Percentage,
    Seconds,
    Section,
    Text,
    choices,
    documented,
    exception_text,
    fail,
    problem,
    said,
    shown,
    worded,
)
from attnbench.study._header import Header, kind_field
from attnbench.study._mechanisms import MechanismEntry, MechanismSpec, Plugins
from attnbench.study._yaml import plain

__all__ = ["MEASURES", "AblationFile", "trains"]

MEASURES = ("accuracy", "flops", "params", "latency")
POINT_TIMEOUT_S = 6 * 3600.0  # one point is a whole training
# the keys of each dataset besides name and augment (attnbench.ablation.data reads them)
_PATHFINDER_EXTRA = ("train_size", "val_size", "seed", "difficulty", "cache_dir", "train_images")
_DATASET_KEYS = {
    "cifar10": ("root", "train_size", "val_size", "label_type"),
    "cifar100": ("root", "train_size", "val_size", "label_type"),
    "imagefolder": ("root", "resolution", "channels", "train_size", "val_size"),
}
_KEY_DOCS = {
    "root": "the local folder of the dataset (nothing is downloaded)",
    "train_size": "images of the train split",
    "val_size": "images of the val split",
    "label_type": "cifar100: fine or coarse",
    "channels": "3 or 1",
    "seed": "generator seed (the val split uses seed + 1_000_003)",
    "difficulty": "easy, medium (the default) or hard: the preset the other keys override",
    "cache_dir": "where generated images are cached",
    "train_images": "shared (every training seed reads the same train split; the default) or per_seed "
    "(each training seed draws its own; the val split stays the same)",
    "augment": "{crop_padding: int, hflip: bool, vflip: bool} over the dataset's defaults",
}


def trains(data: dict[Any, Any]) -> bool:
    """True for a study file without ``kind`` that trains: ``accuracy`` in ``measure``, or a ``dataset``."""
    measure = data.get("measure")
    return "dataset" in data or "accuracy" in (measure if isinstance(measure, list) else [measure])


# ---------------------------------------------------------------------------------------------
# dataset:


def _no_null_defaults(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        if prop.get("default", 0) is None:
            del prop["default"]  # the dataset's own default applies


class _Dataset(Section):
    """A ``dataset:`` mapping; one subclass per dataset name (:func:`dataset_models`)."""

    model_config = ConfigDict(json_schema_extra=_no_null_defaults)
    what: ClassVar[str] = "a mapping with 'name' (pathfinder, cifar10, ...)"


@functools.cache
def dataset_models() -> dict[str, type[_Dataset]]:
    """One model per dataset: its keys (values are the dataset's to check)."""
    from attnbench.ablation.data import REACH_EXTRA
    from attnbench.ablation.data.pathfinder import PathfinderConfig
    from attnbench.ablation.data.reach import ReachConfig

    docs = {
        **_KEY_DOCS,
        **documented(ReachConfig, "Attributes:"),
        **documented(PathfinderConfig, "Attributes:"),
    }
    keys = {
        "pathfinder": (*(f.name for f in dataclasses.fields(PathfinderConfig)), *_PATHFINDER_EXTRA),
        "reach": (*(f.name for f in dataclasses.fields(ReachConfig)), *REACH_EXTRA),
        **_DATASET_KEYS,
    }
    models = {}
    for name, names in keys.items():
        fields: dict[str, Any] = {k: (Any, Field(None, description=docs.get(k))) for k in (*names, "augment")}
        models[name] = create_model(
            f"{name}_dataset",
            __base__=_Dataset,
            __doc__=f"The {name} dataset (attnbench.ablation.data).",
            name=(Literal[name], Field(description="the dataset")),  # type: ignore[valid-type]
            **fields,
        )
    return models


def _validate_dataset(value: Any, info: ValidationInfo) -> dict[str, Any]:
    """One ``dataset`` mapping as a plain dict: a known name and known keys, checked by
    :func:`attnbench.ablation.dataset_shape` (and, for Pathfinder, its generator's settings)."""
    from attnbench.ablation import dataset_shape

    if not isinstance(value, dict):
        raise said(f"expected a mapping with 'name' (pathfinder, cifar10, ...), got {shown(value)}")
    cfg = plain(value)
    try:
        dataset_shape(cfg)  # the name, and an image folder's classes
    except (ValueError, TypeError, OSError) as exc:
        raise said(str(exc)) from None
    dataset_models()[cfg["name"]].model_validate(value, context=info.context)
    if cfg["name"] in ("pathfinder", "reach"):
        from attnbench.ablation.data.pathfinder import PathfinderConfig
        from attnbench.ablation.data.reach import ReachConfig

        config = PathfinderConfig if cfg["name"] == "pathfinder" else ReachConfig
        try:
            config.from_dataset(cfg)
        except (ValueError, TypeError) as exc:
            raise said(str(exc)) from None
    return cfg


class DatasetEntry:
    """``list[DatasetEntry]``: validated by :func:`_validate_dataset`; its JSON Schema lists each
    dataset's keys."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(_validate_dataset)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return handler(TypeAdapter(functools.reduce(operator.or_, dataset_models().values())).core_schema)


# ---------------------------------------------------------------------------------------------
# train:


class _Train(Section):
    """The ``train:`` mapping (:class:`attnbench.ablation.TrainConfig`, plus ``seeds``)."""

    model_config = ConfigDict(json_schema_extra=_no_null_defaults)
    what: ClassVar[str] = "a mapping (epochs, batch, lr, ..., seeds)"

    @classmethod
    def inspect(cls, data: dict[Any, Any], info: ValidationInfo) -> list[InitErrorDetails]:
        from attnbench.ablation import TrainConfig

        if not set(data) <= set(cls.model_fields):
            return []  # unknown keys: said by the schema
        try:
            TrainConfig.from_dict(plain(data))
        except (ValueError, TypeError) as exc:
            return [problem((), str(exc))]
        return []


@functools.cache
def train_model() -> type[_Train]:
    from attnbench.ablation import TrainConfig

    docs = documented(TrainConfig, "Attributes:")
    fields: dict[str, Any] = {
        f.name: (Any, Field(f.default, description=docs.get(f.name))) for f in dataclasses.fields(TrainConfig)
    }
    fields["seeds"] = (
        Annotated[list[NonNegativeInt], OneOrMany("give at least one seed (an int >= 0)")] | None,
        Field(None, description="training seeds, one run each; default: the study's seed"),
    )
    return create_model("train", __base__=_Train, **fields)


class TrainValue(dict):
    """A validated ``train:``: its keys without seeds, as the file gives them (they key the
    checkpoints), with ``seeds`` (None: the study's seed) and ``settings``, the
    :class:`attnbench.ablation.TrainConfig` they make, parsed once here."""

    def __init__(self, config: dict[str, Any], seeds: tuple[int, ...] | None) -> None:
        from attnbench.ablation import TrainConfig

        super().__init__(config)
        self.seeds = seeds
        self.settings = TrainConfig.from_dict(config)

    def __reduce__(self) -> tuple[Any, ...]:  # pickled to the workers with the study
        return (TrainValue, (dict(self), self.seeds))


def _validate_train(value: Any, info: ValidationInfo) -> TrainValue:
    if value is None:
        return TrainValue({}, None)
    checked = train_model().model_validate(value, context=info.context)
    config = plain({k: v for k, v in value.items() if k != "seeds"})
    return TrainValue(config, tuple(checked.seeds) if checked.seeds else None)


class TrainSettings:
    """The ``train:`` mapping, validated by :func:`train_model` (built on first use)."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(_validate_train)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return handler(train_model().__pydantic_core_schema__)


# ---------------------------------------------------------------------------------------------
# analysis:

LEARNED_TOP1 = 70.0  # % val top-1: a Pathfinder training this far above chance has learned
PRIMARY_ENDPOINTS = (
    "counts",
    "final",
)  # attnbench.kinds.ablation.outcomes.PRIMARY_CHOICES (imported late there)


class Analysis(Section):
    """The ``analysis:`` mapping: how the report decides that a training learned and which
    comparisons it tests, declared before the run (docs/outcomes.md)."""

    what: ClassVar[str] = "a mapping (learned_top1, contrasts, alpha, primary)"

    learned_top1: Percentage = Field(
        LEARNED_TOP1,
        description="val top-1 (%) from which a training counts as learned (its final top-1; the first "
        "epoch from which it stays at or above it is its time to learn)",
    )
    contrasts: (
        list[Annotated[list[Text], Field(min_length=2, max_length=2), worded("a pair [a, b] of mechanisms")]]
        | None
    ) = Field(
        None,
        description="the comparisons the report tests, each [a, b]: mechanism a against mechanism b "
        "(every configuration of a against b's first) at every dataset level, Holm-adjusted together; "
        "default: every mechanism against the baseline",
    )
    alpha: Annotated[float, Field(strict=True, gt=0, lt=1), worded("a number in (0, 1)")] = Field(
        0.05, description="family-wise error rate of the Holm-adjusted tests"
    )
    primary: choices(PRIMARY_ENDPOINTS) = Field(  # type: ignore[valid-type]
        ["counts"],
        description="the primary endpoints: counts (Fisher's test of how many trainings learn) and, "
        "where trainings climb rather than jump, final (Mann-Whitney test of every training's final "
        "top-1); the p-values of all primary endpoints form one Holm family",
    )


def resolve_analysis(analysis: Analysis | None, names: list[str], baseline: str) -> dict[str, Any]:
    """The analysis the report applies: the declared one, defaults filled in, as plain data
    (``declared``: whether the study file gave the contrasts)."""
    given = analysis if analysis is not None else Analysis()
    contrasts = given.contrasts
    return {
        "learned_top1": float(given.learned_top1),
        "contrasts": [list(c) for c in contrasts]
        if contrasts
        else [[n, baseline] for n in names if n != baseline],
        "alpha": float(given.alpha),
        "primary": list(dict.fromkeys(given.primary)),
        "declared": analysis is not None and contrasts is not None,
    }


# ---------------------------------------------------------------------------------------------
# The study


def run_problems(
    spec: MechanismSpec,
    entry: Any,
    datasets: list[dict[str, Any]] | None,
    backbone: dict[str, Any] | None,
    train: dict[str, Any] | None,
) -> list[InitErrorDetails]:
    """:func:`attnbench.ablation.check_run` for every parameter combination and dataset (when those
    are valid); problems at the entry."""
    from attnbench.ablation import check_run

    found = []
    if getattr(entry, "sweep", None) is not None:
        found.append(problem(("sweep",), "an ablation study has no sweep axes"))
    if datasets is None or backbone is None or train is None:
        return found
    for combo in spec.combinations():
        for dataset in datasets:
            try:
                check_run(spec.name, combo, dataset, backbone, train)
            except (ValueError, FileNotFoundError) as exc:
                combo_text = ", ".join(f"{k}={v}" for k, v in combo.items())
                on = f"on {dataset['name']}" if len(datasets) > 1 else ""
                lead = " ".join(p for p in (f"with {combo_text}" if combo_text else "", on) if p)
                found.append(problem((), f"{lead}: {exc}" if lead else str(exc)))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a backbone that cannot be built at all
                found.append(problem((), f"building the backbone failed: {exception_text(exc)}"))
    return found


class AblationFile(Header):
    """An ablation study: each mechanism in one backbone, trained from scratch per seed and dataset."""

    say_missing: ClassVar[dict[str, str]] = {
        "dataset": "missing; e.g. {name: pathfinder, resolution: 32, difficulty: easy}",
        "mechanisms": "missing; list at least one mechanism (see `attnbench list`)",
    }
    key_hints: ClassVar[dict[str, str]] = {
        "sweep": "; an ablation study has no sweep (the dataset fixes the input size)",
        "dtype": "; an ablation study trains in fp32 (bf16 autocast on CUDA: train.amp)",
        "batch": "; the batch of an ablation study is train.batch",
        "passes": "; an ablation study trains (pass 'train')",
        "models": "; an ablation study lists mechanisms (models are kind: models)",
    }

    kind: kind_field("ablation") = "ablation"  # type: ignore[valid-type]
    point_timeout_s: Seconds | None = Field(
        POINT_TIMEOUT_S,
        description="seconds one training may take before its worker is killed and it becomes an error "
        "row; null: no limit",
    )
    measure: choices(MEASURES) = Field(  # type: ignore[valid-type]
        ["accuracy", "flops", "params"],
        description="accuracy (required: top-1 after training), flops and params of the backbone, latency",
    )
    dataset: Annotated[list[DatasetEntry], OneOrMany("give at least one dataset mapping", repeats="keep")] = (
        Field(
            description="a dataset mapping (name and its keys), or a list of them (each mechanism trains on "
            "each)"
        )
    )
    backbone: Annotated[dict[str, Any], worded("a mapping (preset and overrides)")] | None = Field(
        None,
        validate_default=True,
        description="preset (stl-nano, ...) and overrides of attnbench.ablation.build_backbone",
    )
    train: TrainSettings | None = Field(
        None,
        validate_default=True,
        description="attnbench.ablation.TrainConfig's keys (epochs, batch, lr, ...) and seeds",
    )
    plugins: Plugins = Field((), description=".py files that register mechanisms, relative to the study file")
    mechanisms: Annotated[
        list[MechanismEntry],
        Field(min_length=1),
        worded(lambda value: "expected a non-empty list of mechanisms (- name: bra)"),
    ] = Field(description="registered mechanisms (see `attnbench list`): a name, or name and params")

    baseline: str | None = Field(
        None,
        validate_default=True,
        description="the mechanism the report compares every other with (paired differences over the "
        "same val images and seeds); default: vanilla if listed, else the first mechanism",
    )

    analysis: Analysis | None = Field(
        None,
        validate_default=True,
        description="when a training counts as learned and which comparisons the report tests, declared "
        "before the run (learned_top1, contrasts, alpha)",
    )

    @field_validator("analysis")
    @classmethod
    def _declared(cls, analysis: Analysis | None, info: ValidationInfo) -> dict[str, Any] | None:
        """The analysis the report applies (:func:`resolve_analysis`), checked against the study."""
        names = [spec.name for spec in info.data.get("mechanisms") or []]
        baseline = info.data.get("baseline")
        if analysis is None:
            return (
                resolve_analysis(None, list(dict.fromkeys(names)), baseline) if names and baseline else None
            )
        problems = []
        for i, pair in enumerate(analysis.contrasts or []):
            for j, name in enumerate(pair):
                if names and name not in names:
                    problems.append(
                        problem(
                            ("contrasts", i, j),
                            f"{name!r} is not among the study's mechanisms; choose one of {names}",
                        )
                    )
            if pair[0] == pair[1]:
                problems.append(problem(("contrasts", i), f"compares {pair[0]!r} with itself"))
        early = dict(info.data.get("train") or {}).get("learned_top1")
        if early is not None and float(early) != float(analysis.learned_top1):
            problems.append(
                problem(
                    ("learned_top1",),
                    f"{analysis.learned_top1} differs from train.learned_top1 = {early}: a training that "
                    "stops as learned must count as learned; give both the same value",
                )
            )
        if problems:
            fail(problems)
        return (
            resolve_analysis(analysis, list(dict.fromkeys(names)), baseline) if names and baseline else None
        )

    @field_validator("train")
    @classmethod
    def _no_train_is_the_defaults(cls, train: TrainValue | None) -> TrainValue:
        return TrainValue({}, None) if train is None else train

    @field_validator("measure")
    @classmethod
    def _accuracy(cls, measure: list[str]) -> list[str]:
        if "accuracy" not in measure:
            raise said("an ablation study trains: list accuracy (with flops, params, latency as wanted)")
        return measure

    @field_validator("backbone")
    @classmethod
    def _builds(cls, backbone: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any]:
        if backbone is None:
            return {}  # the dataset's default backbone (each mechanism's build checks it)
        datasets = info.data.get("dataset")
        if datasets:
            from attnbench.ablation import build_for_dataset

            try:  # the backbone mapping itself, with the plainest mechanism
                build_for_dataset("vanilla", {}, datasets[0], plain(backbone or {}))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - any failure to build is a study problem
                raise said(exception_text(exc)) from None
        return plain(backbone)

    @field_validator("mechanisms", mode="wrap")
    @classmethod
    def _trained_as_set(cls, value: Any, handler: Any, info: ValidationInfo) -> list[MechanismSpec]:
        datasets = info.data.get("dataset")
        backbone = info.data.get("backbone")
        train = dict(info.data["train"] or {}) if "train" in info.data else None
        if info.context is not None:
            info.context["check_entry"] = lambda spec, entry: run_problems(
                spec, entry, datasets, backbone, train
            )
        return handler(value)

    @field_validator("baseline")
    @classmethod
    def _listed(cls, baseline: str | None, info: ValidationInfo) -> str | None:
        """The baseline given, else vanilla if listed, else the first mechanism."""
        names = [spec.name for spec in info.data.get("mechanisms") or []]
        if baseline is not None and names and baseline not in names:
            raise said(f"{baseline!r} is not among the study's mechanisms; choose one of {names}")
        if baseline is None and names:
            return "vanilla" if "vanilla" in names else names[0]
        return baseline

    @property
    def datasets(self) -> tuple[dict[str, Any], ...]:
        return self.dataset

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.train.seeds or (self.seed,)

    def runs(self) -> list[tuple[dict[str, Any], str, dict[str, Any], int]]:
        """Every (dataset, mechanism, params as the study gives them, seed), in run order: seed by
        seed, so that a run stopped part-way already has every level and mechanism once."""
        return [
            (dataset, spec.name, combo, seed)
            for seed in self.seeds
            for dataset in self.datasets
            for spec in self.mechanisms
            for combo in spec.combinations()
        ]


FILE = AblationFile  # the study file of this kind (attnbench.kind: a kind's schema module)
claims = trains  # a file without ``kind`` that trains is an ablation
