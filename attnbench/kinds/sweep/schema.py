"""Sweep studies (``kind: sweep``, the default): mechanisms measured over a product of shapes."""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails

from attnbench.registry import build_mechanism, get_mechanism
from attnbench.study._axes import Sweep
from attnbench.study._fields import OneOrMany, PositiveInt, choices, problem, said, worded
from attnbench.study._header import DTYPES, MEASURES, PASSES, Timed, kind_field, resolve_device
from attnbench.study._mechanisms import MechanismEntry, MechanismSpec, Plugins

__all__ = ["COMPILE_MODES", "MEASURES", "PASSES", "Point", "SweepFile"]

DEFAULT_MEASURES = ("flops", "params", "latency", "memory")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
_PARAM_IN_MESSAGE = re.compile(r"parameter '(\w+)'")


@dataclasses.dataclass(frozen=True)
class Point:
    """One configuration to measure (each is measured once per pass)."""

    mechanism: str
    params: tuple[tuple[str, Any], ...]  # as given in the study; defaults fill the rest
    H: int
    W: int
    dim: int
    num_heads: int
    batch: int
    dtype: str
    compile: str = "none"  # a torch.compile mode, or none (eager)

    def full_params(self) -> dict[str, Any]:
        """Every hyper-parameter of the mechanism: the study's values over the defaults."""
        declared = get_mechanism(self.mechanism).hyperparameters()
        return {**{k: p.default for k, p in declared.items()}, **dict(self.params)}

    @property
    def label(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in self.params)
        head = f"{self.mechanism} {params}".strip()
        mode = "" if self.compile == "none" else f" compile={self.compile}"
        return f"{head} | {self.H}x{self.W} C{self.dim} h{self.num_heads} b{self.batch} {self.dtype}{mode}"


def build_problems(spec: MechanismSpec, sweep: Sweep | None) -> list[InitErrorDetails]:
    """Build ``spec`` on CPU for every parameter combination: one that no ``(dim, num_heads)`` of the
    sweep builds is a problem (at the parameter its message names); one that fails only for some
    becomes skipped points at run time."""
    dims = spec.dims or (tuple(sweep.dim) if sweep else ())
    heads = spec.heads or (tuple(sweep.num_heads) if sweep else ())
    pairs = [(d, h) for d in dims for h in heads if d % h == 0]
    if not pairs:
        if dims and heads and (spec.dims or spec.heads):  # the study's own sweep says so otherwise
            axis = "num_heads" if spec.heads else "dim"
            return [problem(("sweep", axis), f"no num_heads in {list(heads)} divides a dim in {list(dims)}")]
        return []
    found = []
    for combo in spec.combinations():
        errors = []
        for dim, h in pairs:
            try:
                build_mechanism(spec.name, dim, h, **combo)
            except ValueError as exc:
                errors.append(str(exc))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a mechanism that cannot be built at all
                errors.append(f"building it failed: {type(exc).__name__}: {exc}")
            else:
                break
        else:  # no (dim, num_heads) of the sweep builds this combination
            message = errors[0]
            match = _PARAM_IN_MESSAGE.search(message)
            loc = ("params", match.group(1)) if match and match.group(1) in combo else ()
            combo_text = ", ".join(f"{k}={v}" for k, v in combo.items())
            found.append(problem(loc, f"with {combo_text}: {message}" if len(combo) > 1 else message))
    return found


class SweepFile(Timed):
    """A sweep study: each mechanism (times its parameter grid) over the product of the sweep's axes,
    dtype and batch, measured once per pass."""

    say_missing: ClassVar[dict[str, str]] = {
        "sweep": "missing; give resolution (or H and W), dim and num_heads",
        "mechanisms": "missing; list at least one mechanism (see `attnbench list`)",
    }
    key_hints: ClassVar[dict[str, str]] = {
        **{
            k: "; a sweep study does not train (an ablation study does: kind: ablation)"
            for k in ("dataset", "train", "backbone")
        },
        "models": "; whole models are a models study (kind: models)",
    }

    kind: kind_field("sweep") = "sweep"  # type: ignore[valid-type]
    dtype: choices(tuple(DTYPES)) = Field(  # type: ignore[valid-type]
        ("float32",), description="float32, bfloat16 or float16 (not on CPU), or a list of them"
    )
    batch: Annotated[list[PositiveInt], OneOrMany("give at least one positive int")] = Field(
        (1,), description="batch size, or a list of them"
    )
    measure: choices(MEASURES) = Field(  # type: ignore[valid-type]
        DEFAULT_MEASURES,
        description="what to measure: flops (fvcore MACs), params, latency, memory, phases (one profiled "
        "call split by attnbench.phase), max_batch (the largest batch within memory_budget_mib)",
    )
    compile: choices(COMPILE_MODES) = Field(  # type: ignore[valid-type]
        ("none",),
        description="torch.compile modes to measure, each a point of its own: none (eager), default, "
        "reduce-overhead, max-autotune",
    )
    memory_budget_mib: Annotated[float, Field(gt=0)] | None = Field(
        None,
        validate_default=True,
        description="max_batch: the memory a point may use, MiB; required on CPU, default on CUDA: the "
        "device's free memory",
    )
    max_batch_cap: PositiveInt = Field(1024, description="max_batch: the largest batch tried")
    passes: choices(PASSES) = Field(  # type: ignore[valid-type]
        ("forward",), description="forward, and forward_backward (a training step's forward and backward)"
    )
    sweep: Sweep = Field(description="the axes; points are their product (with dtype and batch)")
    plugins: Plugins = Field((), description=".py files that register mechanisms, relative to the study file")
    mechanisms: Annotated[
        list[MechanismEntry],
        Field(min_length=1),
        worded(lambda value: "expected a non-empty list of mechanisms (- name: bra)"),
    ] = Field(description="registered mechanisms (see `attnbench list`): a name, or name, params and sweep")

    @field_validator("dtype")
    @classmethod
    def _float16_needs_a_gpu(cls, dtypes: list[str], info: ValidationInfo) -> list[str]:
        device = info.data.get("device")
        if device is not None and resolve_device(device) == "cpu" and "float16" in dtypes:
            raise said(
                "float16 is not supported on CPU (the device resolves to cpu); use bfloat16 or float32"
            )
        return dtypes

    @field_validator("memory_budget_mib")
    @classmethod
    def _a_budget_on_cpu(cls, budget: float | None, info: ValidationInfo) -> float | None:
        device, measure = info.data.get("device"), info.data.get("measure") or ()
        if (
            budget is None
            and "max_batch" in measure
            and device is not None
            and resolve_device(device) == "cpu"
        ):
            raise said(
                "max_batch on CPU needs a memory budget: give memory_budget_mib (the MiB one point may use)"
            )
        return budget

    @field_validator("mechanisms", mode="wrap")
    @classmethod
    def _built_for_the_sweep(cls, value: Any, handler: Any, info: ValidationInfo) -> list[MechanismSpec]:
        sweep = info.data.get("sweep")  # None: the sweep has problems of its own
        if info.context is not None:
            info.context["check_entry"] = lambda spec, entry: build_problems(spec, sweep)
        return handler(value)

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self.dtype

    @property
    def batches(self) -> tuple[int, ...]:
        return self.batch

    @property
    def compiles(self) -> tuple[str, ...]:
        return self.compile

    @property
    def resolutions(self) -> tuple[tuple[int, int], ...]:
        return tuple(self.sweep.resolutions or ())

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.sweep.dim)

    @property
    def heads(self) -> tuple[int, ...]:
        return tuple(self.sweep.num_heads)

    def points(self) -> list[Point]:
        """The product of the sweep axes and each mechanism's parameter grid, in run order."""
        out: list[Point] = []
        for spec in self.mechanisms:
            for params in spec.combinations():
                frozen = tuple(params.items())
                for dtype, batch, dim, heads, (H, W), mode in itertools.product(
                    self.dtypes,
                    self.batches,
                    spec.dims or self.dims,
                    spec.heads or self.heads,
                    spec.resolutions or self.resolutions,
                    self.compiles,
                ):
                    out.append(Point(spec.name, frozen, H, W, dim, heads, batch, dtype, mode))
        return out


FILE = SweepFile  # the study file of this kind (attnbench.kind: a kind's schema module)
