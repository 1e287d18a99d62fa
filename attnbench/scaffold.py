"""``attnbench new NAME``: write a commented skeleton mechanism that passes ``attnbench check`` as written.

The skeleton is plain global multi-head attention with the whole interface filled in: typed
hyper-parameters with defaults validated by :func:`attnbench.check_param`, a ``check_input``
constraint, a reference ``forward`` written out step by step, ``analytic_flops`` term by term, and a
docstring template for the paper, the variant and the FLOP tolerance. The researcher replaces the
attention and keeps the shape of the file.

Exit codes of :func:`main_new`: 0 written, 2 bad name or target path (nothing written).
"""

from __future__ import annotations

import importlib.util
import inspect
import keyword
import re
import string
import sys
from pathlib import Path

from attnbench.registry import available_mechanisms, get_mechanism

__all__ = ["EXIT_BAD_INPUT", "BadName", "class_name", "main_new", "render", "validate_name"]

EXIT_BAD_INPUT = 2

TEMPLATE = string.Template('''\
"""${cls}: <one line: what it computes>.

<Paper title> (<First author> et al., <Venue Year>); code: <URL of the released code>.

Variant: <which released file and class this follows, and every quirk of it kept or dropped, with
the reason>. As written by ``attnbench new`` this is plain global multi-head attention over all
N = H·W tokens, scale head_dim^-0.5: replace ``forward`` (and what it needs) with yours.

FLOPs: ``analytic_flops`` equals the fvcore count exactly (``flops_rtol = 0``). <If yours cannot,
say here which term differs from the count and why, and set ``flops_rtol`` to the smallest
tolerance that passes.>

Check it with ``attnbench check <this file>``; compare it in a study with ``plugins: [<this file>]``
and ``mechanisms:`` naming ``${name}``.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnbench import AttentionMechanism, check_param, register_mechanism


@register_mechanism("${name}")
class ${cls}(AttentionMechanism):
    """<One line naming the paper and the variant.>

    Args:
        dim: channels C.
        num_heads: attention heads.
        qkv_bias: bias in the q/k/v projection.
        qk_scale: attention scale; None is head_dim^-0.5.
        max_tokens: the largest H·W accepted (this reference materialises N x N scores per head).
    """

    # How reports show it: the name papers use, a plot colour and marker, and its paper's BibTeX
    # entry (tables cite its key); leave them out for a spare colour and no citation.
    display_name = "${name}"
    # color = "#117733"
    # marker = "d"
    # bibtex = "@inproceedings{key2026,\\n  title = {...},\\n  year = {2026}\\n}"

    # Relative tolerance of the "flops" check (analytic vs counted MACs). Keep 0 while
    # analytic_flops is exact; otherwise explain the gap in the module docstring.
    flops_rtol = 0.0

    # Parameters that legitimately get no gradient (e.g. only used under no_grad), with the reason;
    # the "gradients" check skips them.
    no_grad_params: frozenset[str] = frozenset()

    # Hyper-parameters: keyword-only, typed (int, float, bool, str, Literal[...] or X | None), with
    # the paper's defaults. attnbench reads them from this signature: `attnbench list`, the study
    # validator and the results' columns use their names, types and defaults.
    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        max_tokens: int = 4096,
    ) -> None:
        super().__init__(dim, num_heads)  # validates dim and num_heads; sets self.head_dim
        # One check_param per range: its ValueError names the parameter, the value and what is
        # allowed (build_mechanism and studies also check each value's type against its annotation).
        check_param(qk_scale is None or qk_scale > 0, "qk_scale", qk_scale, "a float > 0, or None")
        check_param(max_tokens >= 1, "max_tokens", max_tokens, "an int >= 1")
        # Keep each hyper-parameter as an attribute of the same name (the module's repr shows them).
        self.qkv_bias = qkv_bias
        self.qk_scale = qk_scale
        self.max_tokens = max_tokens
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def check_input(self, H: int, W: int) -> None:
        """Refuse maps these parameters cannot process; the runner skips them with this message."""
        if H * W > self.max_tokens:
            raise ValueError(
                f"{self.name}: a {H}x{W} map has {H * W} tokens, more than max_tokens = "
                f"{self.max_tokens}; pass max_tokens >= {H * W} or use a smaller map"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_shape(x)  # (B, H, W, C) with C = dim, then check_input(H, W)
        B, H, W, C = x.shape
        N, h, d = H * W, self.num_heads, self.head_dim
        qkv = self.qkv(x).view(B, N, 3, h, d).permute(2, 0, 3, 1, 4)  # (3, B, h, N, d)
        q, k, v = qkv.unbind(0)  # each (B, h, N, d)
        scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, h, N, N)
        attn = scores.softmax(dim=-1)  # (B, h, N, N)
        out = attn @ v  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, H, W, C)  # (B, H, W, C)
        return self.proj(out)

    def analytic_flops(self, H: int, W: int) -> dict[str, int]:
        """MACs for one (1, H, W, C) input, term by term (one multiply-accumulate = one FLOP).

        The fvcore convention counts matrix products and convolutions; softmax, scaling and other
        element-wise ops are free. Compare with attnbench.count_flops(module, x).by_module.
        """
        N, C = H * W, self.dim
        return {
            "qkv_proj": 3 * N * C * C,
            "scores": N * N * C,  # q @ k^T over all heads: N·N·head_dim per head
            "weighted_sum": N * N * C,  # attn @ v
            "out_proj": N * C * C,
        }
''')


class BadName(ValueError):
    """A mechanism name ``attnbench new`` will not use; the message says what would work."""


def class_name(name: str) -> str:
    """CamelCase class name for a mechanism name: ``my_attn`` -> ``MyAttnAttention``."""
    camel = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    return camel if camel.endswith("Attention") else f"{camel}Attention"


def _suggest_identifier(name: str) -> str:
    cleaned = re.sub(r"\W+", "_", name.strip()).strip("_").lower()
    if cleaned and cleaned[0].isdigit():
        cleaned = f"attn_{cleaned}"
    if keyword.iskeyword(cleaned):
        cleaned = f"{cleaned}_attention"
    return cleaned or "my_attention"


def validate_name(name: str, target: Path | None = None) -> None:
    """Refuse names that cannot be a mechanism and a module file.

    Args:
        name: the proposed mechanism name.
        target: the file about to be written (a module found there is the file itself, not a clash).

    Raises:
        BadName: not an identifier, a keyword, private, already registered, or the name of an
            importable module that a ``NAME.py`` file would shadow.
    """
    if not name.isidentifier() or keyword.iskeyword(name):
        raise BadName(
            f"mechanism name {name!r} must be a Python identifier that is not a keyword; "
            f"try {_suggest_identifier(name)!r}"
        )
    if name.startswith("_"):
        raise BadName(
            f"mechanism name {name!r} starts with '_' (private modules are skipped by the mechanisms "
            f"package); try {name.lstrip('_') or 'my_attention'!r}"
        )
    registered = available_mechanisms()
    if name in registered and not _registered_from(name, target):
        raise BadName(
            f"mechanism name {name!r} is already registered (registered: {', '.join(registered)}); "
            f"pick another, e.g. {name + '_v2'!r}"
        )
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        origin = Path(spec.origin).resolve() if spec.origin and spec.origin != "built-in" else None
        if target is None or origin != target.resolve():
            raise BadName(
                f"mechanism name {name!r} is an importable module ({spec.origin}); a file {name}.py "
                f"would shadow it. Pick another, e.g. {name + '_attention'!r}"
            )


def _registered_from(name: str, target: Path | None) -> bool:
    """True when ``name`` is registered by the file ``target`` itself (rewriting it is no clash)."""
    if target is None:
        return False
    try:
        source = inspect.getsourcefile(get_mechanism(name))
    except TypeError:
        return False
    return source is not None and Path(source).resolve() == target.resolve()


def render(name: str) -> str:
    """The skeleton file's text for mechanism ``name``."""
    return TEMPLATE.substitute(name=name, cls=class_name(name))


def _target(name: str, out: Path | None) -> Path:
    if out is None:
        return Path(f"{name}.py")
    if out.is_dir() or str(out).endswith(("/", "\\")):
        return out / f"{name}.py"
    if out.suffix != ".py":
        raise BadName(f"--out {str(out)!r} must be a .py file or an existing folder")
    return out


def _in_mechanisms_package(path: Path) -> bool:
    try:
        import mechanisms
    except ImportError:
        return False
    here = path.resolve().parent
    return any(here == Path(p).resolve() for p in mechanisms.__path__)


def main_new(name: str, out: Path | None = None, force: bool = False) -> int:
    """Write the skeleton of mechanism ``name`` and print the next steps.

    Args:
        name: the mechanism's registry name (a Python identifier, not yet registered).
        out: a ``.py`` file, or a folder that gets ``NAME.py``; default ``./NAME.py``.
            ``mechanisms/NAME.py`` in a checkout makes it part of the zoo.
        force: overwrite an existing file.

    Returns:
        0 when written, 2 for a bad name or path, or an existing file without ``force``.
    """
    try:
        path = _target(name, out)
        validate_name(name, path)
    except BadName as exc:
        print(f"attnbench new: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if path.exists() and not force:
        print(f"attnbench new: {path} exists; pass --force to overwrite it", file=sys.stderr)
        return EXIT_BAD_INPUT
    if path.exists() and not path.is_file():
        print(f"attnbench new: {path} exists and is not a file", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(name), encoding="utf-8")
    except OSError as exc:
        print(f"attnbench new: cannot write {path}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"attnbench new: wrote {path} (class {class_name(name)}, registered as {name!r})")
    if _in_mechanisms_package(path):
        print(
            "next:\n"
            f"  attnbench check {name}        # the conformance suite; the skeleton passes it\n"
            "  then replace forward, analytic_flops, check_input and the docstrings with yours;\n"
            f"  it is part of the zoo: studies name it as `- {name}`, tests/test_conformance.py covers it"
        )
    else:
        print(
            "next:\n"
            f"  attnbench check {path}        # the conformance suite; the skeleton passes it\n"
            "  then replace forward, analytic_flops, check_input and the docstrings with yours;\n"
            f"  in a study: plugins: [{path.name}] (relative to the study file) and mechanisms: [{name}]"
        )
    return 0
