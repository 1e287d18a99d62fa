"""Citations of the reports: ``references.bib`` in the run folder and the ``\\cite`` keys of the tables.

The counting tools and the code bases whose numbers a models table quotes have one BibTeX entry
here; each mechanism keeps its paper's entry with itself (its ``bibtex``), read through the
registry. :func:`cite_keys` finds the entries a free-text source names
(``"github rayleizhu/BiFormer README, ..."``), and :func:`strip_file_refs` drops the mentions of
files that are not in the run folder from such text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["BIB", "bib_entry", "cite", "cite_keys", "strip_file_refs", "write_bib"]

BIB = {
    "fvcore": (
        "@misc{fvcore,\n  title = {fvcore: a light-weight core library for computer vision},\n  author = "
        "{{Facebook AI Research}},\n  howpublished = {\\texttt{github.com/facebookresearch/fvcore}},\n"
        "  year = {2019}\n}"
    ),
    "wightman2019timm": (
        "@misc{wightman2019timm,\n  title = {PyTorch Image Models},\n  author = {Wightman, Ross},\n"
        "  howpublished = {\\texttt{github.com/huggingface/pytorch-image-models}},\n  year = {2019}\n}"
    ),
    "biformercode": (
        "@misc{biformercode,\n  title = {{BiFormer}: official code and models},\n  author = {Zhu, Lei},\n"
        "  howpublished = {\\texttt{github.com/rayleizhu/BiFormer}},\n  year = {2023}\n}"
    ),
    "debiformercode": (
        "@misc{debiformercode,\n  title = {{DeBiFormer}: official code and models},\n  author = {Long, "
        "Nguyen Huu Bao},\n  howpublished = {\\texttt{github.com/maclong01/DeBiFormer}},\n  year = {2024}\n}"
    ),
    "swincode": (
        "@misc{swincode,\n  title = {Swin Transformer: official code and models},\n"
        "  author = {{Microsoft}},\n"
        "  howpublished = {\\texttt{github.com/microsoft/Swin-Transformer}},\n  year = {2021}\n}"
    ),
}

# what a free-text source names -> the entry (checked in this order; every match is cited)
_SOURCES = [
    (re.compile(r"rayleizhu/BiFormer|BiFormer issue", re.I), "biformercode"),
    (re.compile(r"maclong01/DeBiFormer", re.I), "debiformercode"),
    (re.compile(r"microsoft/Swin-Transformer", re.I), "swincode"),
    (re.compile(r"\bBiFormer \(Zhu", re.I), "zhu2023biformer"),
    (re.compile(r"\bDeBiFormer \(Long", re.I), "long2024debiformer"),
    (re.compile(r"\bSwin Transformer \(Liu|Swin paper", re.I), "liu2021swin"),
    (re.compile(r"\bMaxViT (?:paper|\(Tu)", re.I), "tu2022maxvit"),
    (re.compile(r"\bfvcore\b", re.I), "fvcore"),
    (re.compile(r"\btimm\b", re.I), "wightman2019timm"),
]
_FILE_REF = re.compile(
    r"\s*\((?:via |see )?(?:[\w.-]+/)*[\w.-]+\.(?:md|py|yaml|yml|txt|json|csv)(?:#[\w-]+)?\)"
    r"|\s*\b(?:via |see )?(?:docs|tests|studies|attnbench|mechanisms)/[\w./#-]+",
)


def strip_file_refs(text: str) -> str:
    """``text`` without mentions of repository files (``(docs/reference-numbers.md)``), which a
    reader of the run folder does not have."""
    return _FILE_REF.sub("", str(text)).strip()


def cite_keys(text: str) -> list[str]:
    """The keys of :data:`BIB` that a free-text source names, in :data:`BIB` order of first match."""
    return list(dict.fromkeys(key for pattern, key in _SOURCES if pattern.search(str(text))))


def cite(keys: Iterable[str]) -> str:
    """``\\cite{a,b}`` for the keys (empty for none)."""
    keys = list(dict.fromkeys(keys))
    return f"\\cite{{{','.join(keys)}}}" if keys else ""


def bib_entry(key: str) -> str | None:
    """The BibTeX entry of ``key``: one of :data:`BIB`, or a registered mechanism's paper."""
    if key in BIB:
        return BIB[key]
    from attnbench.registry import available_mechanisms
    from attnbench.report._results import mechanism_citation

    for name in available_mechanisms():
        found = mechanism_citation(name)
        if found is not None and found[0] == key:
            return found[1]
    return None


def write_bib(run_dir: Path, texts: Iterable[str]) -> Path | None:
    """Write ``references.bib`` with the entries that ``\\cite`` commands in ``texts`` use."""
    used: list[str] = []
    for text in texts:
        for group in re.findall(r"\\cite\{([^}]*)\}", text):
            used += [k.strip() for k in group.split(",")]
    entries_of = {k: bib_entry(k) for k in dict.fromkeys(used)}
    used = [k for k, entry in entries_of.items() if entry is not None]
    path = Path(run_dir) / "references.bib"
    if not used:
        path.unlink(missing_ok=True)
        return None
    # a long path in \texttt may break after a slash, so no line of the bibliography is overfull
    entries = [
        re.sub(r"(\\texttt\{[^}]*\})", lambda m: m.group(1).replace("/", "/\\allowbreak "), entries_of[k])
        for k in used
    ]
    path.write_text("\n\n".join(entries) + "\n")
    return path
