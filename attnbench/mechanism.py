"""The one attention interface: channels-last ``(B, H, W, C)`` in, the same shape out."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, ClassVar, Literal, get_args, get_origin

from torch import Tensor, fx, nn

__all__ = ["AttentionMap", "AttentionMechanism", "Param", "Region", "check_param"]


@dataclasses.dataclass(frozen=True)
class Region:
    """A rectangle of input positions a mechanism shows for a query (a window, a routed region, a
    stripe): rows ``top .. top + height - 1`` and columns ``left .. left + width - 1`` of the map.

    A region that wraps around the map (Swin's shifted windows) is given as several rectangles with
    the same ``label``.
    """

    label: str
    top: int
    left: int
    height: int
    width: int


@dataclasses.dataclass(frozen=True)
class AttentionMap:
    """What one query of one input attends to, on the ``(H, W)`` grid of the mechanism's input.

    Attributes:
        query: ``(row, col)`` of the query on the map.
        weights: ``(heads, H, W)`` float tensor: for each head, the weight of each input position's
            value in the query's output (the attention probabilities, moved onto the grid; weights of
            keys sampled between positions are split bilinearly over the four neighbours).
        normalized: True where each head's weights sum to 1 (a softmax over the keys, or a product of
            softmaxes); False where they need not (a linear attention's kernel weights before
            normalization, say so in ``note``).
        regions: the rectangles that explain the pattern (Swin's window, BRA's routed regions, axial's
            stripes), drawn as outlines.
        points: ``(heads, P, 2)`` fractional ``(row, col)`` positions of sampled keys or agents (DAT's
            sampling points, DBRA's agents), or None.
        point_weights: ``(heads, P)`` the query's weight on each point, or None.
        note: one line saying what is drawn, e.g. "routed regions (k = 4) and token weights".
    """

    query: tuple[int, int]
    weights: Tensor
    normalized: bool = True
    regions: tuple[Region, ...] = ()
    points: Tensor | None = None
    point_weights: Tensor | None = None
    note: str = ""


_MISSING = inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyper-parameter of a mechanism, read from its ``__init__`` signature.

    Attributes:
        name: keyword name.
        annotation: the declared type (``int``, ``float``, ``bool``, ``str`` or a ``Literal``).
        default: the paper's default.
        choices: allowed values when the annotation is a ``Literal``.
    """

    name: str
    annotation: Any
    default: Any
    choices: tuple[Any, ...] | None = None

    @property
    def type_name(self) -> str:
        if self.choices is not None:
            return " | ".join(repr(c) for c in self.choices)
        inner = _optional_inner(self.annotation)
        if inner is not None:
            return f"{inner.__name__} | None"
        return getattr(self.annotation, "__name__", str(self.annotation))

    def coerce(self, value: Any, where: str) -> Any:
        """Check ``value`` against the declared type; ints are accepted where floats are declared.

        Raises:
            ValueError: naming the parameter, the value and what would be valid.
        """
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(
                    f"{where}: parameter {self.name!r} = {value!r} is not allowed; "
                    f"choose one of {list(self.choices)}"
                )
            return value
        ann = self.annotation
        inner = _optional_inner(ann)
        if inner is not None:
            if value is None:
                return None
            ann = inner
        if ann is bool:
            ok = isinstance(value, bool)
        elif ann is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif ann is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif ann is str:
            ok = isinstance(value, str)
        else:
            ok = True  # unusual annotations are checked by the mechanism itself
        if not ok:
            raise ValueError(
                f"{where}: parameter {self.name!r} = {value!r} has type {type(value).__name__}; "
                f"expected {self.type_name}"
            )
        return value


def _resolve_annotation(ann: Any) -> tuple[Any, tuple[Any, ...] | None]:
    if get_origin(ann) is Literal:
        return ann, tuple(get_args(ann))
    return ann, None


def _optional_inner(ann: Any) -> Any | None:
    """``X`` for an ``X | None`` annotation, else None."""
    if get_origin(ann) in (typing.Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1 and len(get_args(ann)) == 2:
            return args[0]
    return None


def check_param(ok: bool, name: str, value: Any, allowed: str) -> None:
    """Raise a ``ValueError`` naming a parameter, its value and the allowed range unless ``ok``."""
    if not ok:
        raise ValueError(f"parameter {name!r} = {value!r} is out of range; allowed: {allowed}")


class _RegistryName:
    """Class attribute that reads as the class's registry ``name`` until a subclass sets its own."""

    def __get__(self, obj: object, owner: type) -> str:
        return owner.name


class AttentionMechanism(nn.Module):
    """Base class of every attention mechanism in attnbench.

    A subclass declares its hyper-parameters once, as keyword-only arguments of ``__init__`` with
    type hints and the defaults of its paper::

        @register_mechanism("mine")
        class Mine(AttentionMechanism):
            def __init__(self, dim: int, num_heads: int, *, window: int = 7) -> None:
                super().__init__(dim, num_heads)
                check_param(window > 0, "window", window, "a positive int")

    and implements ``forward(x)`` on ``(B, H, W, C)`` tensors, ``analytic_flops(H, W)`` (its closed
    form cost in multiply-accumulates for batch 1, term by term) and, where some shapes cannot work,
    ``check_input(H, W)``.

    The input is validated before ``forward`` runs: a tensor that is not ``(B, H, W, dim)`` raises a
    ``ValueError`` naming the mechanism, the shape got and the layout expected, and then
    ``check_input(H, W)`` is asked, so ``forward`` starts from a valid map and need not check it.
    """

    name: ClassVar[str] = ""
    #: The name papers use, plain text ("BRA", "Swin"); reports show it in every table and plot.
    #: Default: the registry name.
    display_name: ClassVar[str] = _RegistryName()  # type: ignore[assignment]
    #: Short symbols of parameters for labels, e.g. ``{"n_win": "S", "topk": "k"}`` gives
    #: "BRA (S=7, k=4)"; plain text, ``_`` starts a subscript in LaTeX, Greek letters are allowed.
    param_symbols: ClassVar[dict[str, str]] = {}
    #: The ``backend=`` value that is the mechanism's plain reference (the oracle its other backends
    #: are tested against), for a mechanism with several implementations; None for one with one.
    reference_backend: ClassVar[str | None] = None
    #: Colour (``#rrggbb``) and matplotlib marker of the mechanism in every plot of every report;
    #: None: the report gives it one of its spare colours and markers.
    color: ClassVar[str | None] = None
    marker: ClassVar[str | None] = None
    #: The BibTeX entry of the paper that introduced the mechanism; LaTeX tables cite its key and
    #: ``references.bib`` carries it. Empty: nothing cited.
    bibtex: ClassVar[str] = ""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        check_param(isinstance(dim, int) and dim > 0, "dim", dim, "a positive int")
        check_param(isinstance(num_heads, int) and num_heads > 0, "num_heads", num_heads, "a positive int")
        if dim % num_heads:
            raise ValueError(
                f"parameter 'num_heads' = {num_heads} does not divide dim = {dim}; "
                f"choose num_heads among {[h for h in range(1, dim + 1) if dim % h == 0][:12]}"
            )
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # A forward pre-hook rather than an override of __call__: nn.Module.__call__ runs hooks on
        # every path that calls the module (eager, the jit trace fvcore counts with, FlopCounterMode,
        # torch.compile, which traces hooks like forward, and Module.compile, which replaces the
        # call implementation an override of __call__ would bypass). A module-level function, not a
        # bound method, so deepcopy and pickle of the module need nothing special.
        self.register_forward_pre_hook(_validate_input, with_kwargs=True, prepend=True)

    @classmethod
    def hyperparameters(cls) -> dict[str, Param]:
        """The mechanism's own parameters (everything after ``dim, num_heads``), in order."""
        sig = inspect.signature(cls.__init__)
        try:
            hints = typing.get_type_hints(cls.__init__)
        except Exception:  # noqa: BLE001 - unresolved forward refs: fall back to raw annotations
            hints = {}
        params: dict[str, Param] = {}
        for p in list(sig.parameters.values())[3:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.default is _MISSING:
                raise TypeError(
                    f"{cls.__name__}.__init__: parameter {p.name!r} needs a default (the paper's), "
                    "so the mechanism builds from dim and num_heads alone"
                )
            ann, choices = _resolve_annotation(hints.get(p.name, p.annotation))
            params[p.name] = Param(p.name, ann, p.default, choices)
        return params

    @classmethod
    def backends(cls) -> tuple[str, ...]:
        """The named implementations of the mechanism: the choices of a ``backend`` parameter other
        than ``"auto"`` (``()`` for a mechanism with one implementation)."""
        param = cls.hyperparameters().get("backend")
        if param is None or param.choices is None:
            return ()
        return tuple(str(c) for c in param.choices if c != "auto")

    def backend_unavailable(self, x: Tensor, backend: str, backward: bool = False) -> str | None:
        """Why ``backend`` cannot run this module's forward (and its backward, with ``backward``) on
        ``x`` (its device, dtype and shape), or None where it can. ``attnbench doctor`` asks this
        before it checks a backend; the default says every backend can run."""
        return None

    def chosen_backend(self, x: Tensor) -> str | None:
        """The backend this module's forward takes on ``x`` (``backend="auto"`` resolved), or None
        for a mechanism with one implementation."""
        return None

    def extra_repr(self) -> str:
        hp = ", ".join(f"{k}={getattr(self, k, v.default)!r}" for k, v in self.hyperparameters().items())
        return f"dim={self.dim}, num_heads={self.num_heads}" + (f", {hp}" if hp else "")

    def check_input(self, H: int, W: int) -> None:
        """Raise ``ValueError`` if an ``H x W`` map cannot be processed with these parameters."""

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """Closed-form cost for one ``(1, H, W, C)`` input, in multiply-accumulates, term by term."""
        raise NotImplementedError(f"{type(self).__name__} does not define analytic_flops")

    def attention_map(self, x: Tensor, query: tuple[int, int]) -> AttentionMap:
        """Where the query at ``query = (row, col)`` of ``x`` (``(1, H, W, C)``) looks: optional.

        Mechanisms that implement it are drawn by ``attnbench maps``; the picture code reads only the
        returned :class:`AttentionMap`, never the mechanism's internals. Computed under
        ``torch.no_grad()`` in eval mode by the caller; the weights are those of ``forward`` on ``x``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} ({self.name!r}) has no attention_map(x, query); implement it to draw "
            "the mechanism with attnbench maps (docs/adding-a-mechanism.md)"
        )

    def _check_query(self, x: Tensor, query: tuple[int, int]) -> None:
        """Raise ``ValueError`` unless ``x`` is one valid ``(1, H, W, dim)`` map and ``query`` a
        ``(row, col)`` on it (for :meth:`attention_map`, which the forward pre-hook does not guard)."""
        self._check_shape(x)
        _, H, W, _ = x.shape
        r, c = query
        if x.shape[0] != 1 or not (0 <= r < H and 0 <= c < W):
            raise ValueError(
                f"{self.name or type(self).__name__}: attention_map takes x (1, H, W, C) and a query on the "
                f"map; got x {tuple(x.shape)}, query {query}"
            )

    @classmethod
    def has_attention_map(cls) -> bool:
        """True where the class overrides :meth:`attention_map`."""
        return cls.attention_map is not AttentionMechanism.attention_map

    def _check_shape(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``(B, H, W, dim)`` and ``check_input(H, W)`` passes.

        The base class runs this before every ``forward``; calling it again in ``forward`` is harmless.
        Under torch.fx symbolic tracing ``x`` is a ``Proxy`` with no concrete shape: nothing is
        checked then (the traced graph carries no check; a mechanism kept as a leaf module, as timm's
        FX feature extraction keeps the seed models' ones, is checked when the graph runs).
        """
        if isinstance(x, fx.Proxy):
            return
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[-1] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            label = f"{type(self).__name__} ({self.name!r})" if self.name else type(self).__name__
            hint = ""
            if isinstance(x, Tensor) and x.dim() == 4 and x.shape[1] == self.dim:
                hint = "; this looks channels-first (B, C, H, W): pass x.permute(0, 2, 3, 1)"
            raise ValueError(
                f"{label}: expected a channels-last (B, H, W, dim) tensor with dim = {self.dim}, "
                f"got shape {got}{hint}"
            )
        self.check_input(x.shape[1], x.shape[2])


def _validate_input(module: AttentionMechanism, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Forward pre-hook of every mechanism: the map's layout and ``check_input`` before ``forward``."""
    x = args[0] if args else next(iter(kwargs.values()), None)
    module._check_shape(x)
