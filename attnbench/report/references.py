"""Citations of the reports: ``references.bib`` in the run folder and the ``\\cite`` keys of the tables.

Each mechanism of the zoo, the counting tools and the code bases whose numbers a models table
quotes have one BibTeX entry here. :func:`cite_keys` finds the entries a free-text source names
(``"github rayleizhu/BiFormer README, ..."``), and :func:`strip_file_refs` drops the mentions of
files that are not in the run folder from such text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["BIB", "MECHANISM_KEYS", "cite", "cite_keys", "strip_file_refs", "write_bib"]

BIB = {
    "zhu2023biformer": (
        "@inproceedings{zhu2023biformer,\n  title = {{BiFormer}: Vision Transformer with Bi-Level Routing "
        "Attention},\n  author = {Zhu, Lei and Wang, Xinjiang and Ke, Zhanghan and Zhang, Wayne and Lau, "
        "Rynson},\n  booktitle = {CVPR},\n  year = {2023}\n}"
    ),
    "long2024debiformer": (
        "@inproceedings{long2024debiformer,\n  title = {{DeBiFormer}: Vision Transformer with Deformable "
        "Agent Bi-level Routing Attention},\n  author = {Long, Nguyen Huu Bao and Zhang, Chenyu and Shi, "
        "Yuzhi and Hirakawa, Tsubasa and Yamashita, Takayoshi and Matsui, Tohgoroh and Fujiyoshi, "
        "Hironobu},\n  booktitle = {ACCV},\n  year = {2024}\n}"
    ),
    "liu2021swin": (
        "@inproceedings{liu2021swin,\n  title = {Swin Transformer: Hierarchical Vision Transformer using "
        "Shifted Windows},\n  author = {Liu, Ze and Lin, Yutong and Cao, Yue and Hu, Han and Wei, Yixuan "
        "and Zhang, Zheng and Lin, Stephen and Guo, Baining},\n  booktitle = {ICCV},\n  year = {2021}\n}"
    ),
    "hassani2023nat": (
        "@inproceedings{hassani2023nat,\n  title = {Neighborhood Attention Transformer},\n  author = "
        "{Hassani, Ali and Walton, Steven and Li, Jiachen and Li, Shen and Shi, Humphrey},\n  booktitle = "
        "{CVPR},\n  year = {2023}\n}"
    ),
    "hassani2022dinat": (
        "@article{hassani2022dinat,\n  title = {Dilated Neighborhood Attention Transformer},\n  author = "
        "{Hassani, Ali and Shi, Humphrey},\n  journal = {arXiv preprint arXiv:2209.15001},\n"
        "  year = {2022}\n}"
    ),
    "xia2022dat": (
        "@inproceedings{xia2022dat,\n  title = {Vision Transformer with Deformable Attention},\n  author = "
        "{Xia, Zhuofan and Pan, Xuran and Song, Shiji and Li, Li Erran and Huang, Gao},\n  booktitle = "
        "{CVPR},\n  year = {2022}\n}"
    ),
    "ho2019axial": (
        "@article{ho2019axial,\n  title = {Axial Attention in Multidimensional Transformers},\n  author = "
        "{Ho, Jonathan and Kalchbrenner, Nal and Weissenborn, Dirk and Salimans, Tim},\n  journal = {arXiv "
        "preprint arXiv:1912.12180},\n  year = {2019}\n}"
    ),
    "vaswani2017attention": (
        "@inproceedings{vaswani2017attention,\n  title = {Attention Is All You Need},\n  author = {Vaswani, "
        "Ashish and Shazeer, Noam and Parmar, Niki and Uszkoreit, Jakob and Jones, Llion and Gomez, Aidan N. "
        "and Kaiser, {\\L}ukasz and Polosukhin, Illia},\n  booktitle = {NeurIPS},\n  year = {2017}\n}"
    ),
    "han2024agent": (
        "@inproceedings{han2024agent,\n  title = {Agent Attention: On the Integration of Softmax and Linear "
        "Attention},\n  author = {Han, Dongchen and Ye, Tianzhu and Han, Yizeng and Xia, Zhuofan and Pan, "
        "Siyuan and Wan, Pengfei and Song, Shiji and Huang, Gao},\n  booktitle = {ECCV},\n  year = {2024}\n}"
    ),
    "han2023flatten": (
        "@inproceedings{han2023flatten,\n  title = {{FLatten} Transformer: Vision Transformer using Focused "
        "Linear Attention},\n  author = {Han, Dongchen and Pan, Xuran and Han, Yizeng and Song, Shiji and "
        "Huang, Gao},\n  booktitle = {ICCV},\n  year = {2023}\n}"
    ),
    "tu2022maxvit": (
        "@inproceedings{tu2022maxvit,\n  title = {{MaxViT}: Multi-Axis Vision Transformer},\n  author = {Tu, "
        "Zhengzhong and Talebi, Hossein and Zhang, Han and Yang, Feng and Milanfar, Peyman and Bovik, Alan "
        "and Li, Yinxiao},\n  booktitle = {ECCV},\n  year = {2022}\n}"
    ),
    "wang2022kvt": (
        "@inproceedings{wang2022kvt,\n  title = {{KVT}: k-NN Attention for Boosting Vision Transformers},\n"
        "  author = {Wang, Pichao and Wang, Xue and Wang, Fan and Lin, Ming and Chang, Shuning and Li, Hao "
        "and Jin, Rong},\n  booktitle = {ECCV},\n  year = {2022}\n}"
    ),
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

MECHANISM_KEYS = {
    "vanilla": "vaswani2017attention",
    "bra": "zhu2023biformer",
    "dbra": "long2024debiformer",
    "swin": "liu2021swin",
    "neighborhood": "hassani2023nat",
    "dilated": "hassani2022dinat",
    "deformable": "xia2022dat",
    "axial": "ho2019axial",
    "agent": "han2024agent",
    "flatten": "han2023flatten",
    "maxvit": "tu2022maxvit",
    "kvt": "wang2022kvt",
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


def write_bib(run_dir: Path, texts: Iterable[str]) -> Path | None:
    """Write ``references.bib`` with the entries that ``\\cite`` commands in ``texts`` use."""
    used: list[str] = []
    for text in texts:
        for group in re.findall(r"\\cite\{([^}]*)\}", text):
            used += [k.strip() for k in group.split(",")]
    used = [k for k in dict.fromkeys(used) if k in BIB]
    path = Path(run_dir) / "references.bib"
    if not used:
        path.unlink(missing_ok=True)
        return None
    # a long path in \texttt may break after a slash, so no line of the bibliography is overfull
    entries = [
        re.sub(r"(\\texttt\{[^}]*\})", lambda m: m.group(1).replace("/", "/\\allowbreak "), BIB[k])
        for k in used
    ]
    path.write_text("\n\n".join(entries) + "\n")
    return path
