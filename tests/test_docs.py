"""The README and docs/: every page reachable, every relative link resolving, no outside citations."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

TEST_COMMAND = (
    'pip install torch==2.13.0 torchvision==0.28.0 && pip install --no-build-isolation -e ".[test]" '
    "&& python -m pytest"
)
RUN_COMMAND = (
    "pip install torch==2.13.0 torchvision==0.28.0 && pip install --no-build-isolation -e . "
    "&& attnbench run studies/complexity.yaml"
)
OUTSIDE_DOC = "FACTS" + ".md"  # split so that this file does not mention it itself

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_REF = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.I)


def _pages() -> list[Path]:
    return sorted([README, *DOCS.glob("*.md")])


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where a link is not a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _targets(page: Path) -> list[str]:
    text = _prose(page.read_text(encoding="utf-8"))
    return _LINK.findall(text) + _HTML_REF.findall(text)


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)) or target.startswith("//")


def _slug(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    return slug if n == 0 else f"{slug}-{n}"


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m.group(1), seen) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def _linked_pages(page: Path) -> set[Path]:
    out = set()
    for target in _targets(page):
        if _is_external(target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if path.suffix == ".md":
            out.add(path)
    return out


def test_docs_exist():
    assert DOCS.is_dir(), "docs/ is missing"
    assert (DOCS / "index.md").is_file(), "docs/index.md (the table of contents) is missing"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_docs_page_is_reachable_from_the_readme(page):
    from_readme = _linked_pages(README)
    index = (DOCS / "index.md").resolve()
    reachable = from_readme | (_linked_pages(index) if index in from_readme else set())
    assert page.resolve() in reachable, (
        f"docs/{page.name} is linked neither from README.md nor from docs/index.md (linked from README.md)"
    )


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in _targets(page):
        if _is_external(target):
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page.resolve()
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif not path.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n  " + "\n  ".join(broken)


def _repository_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        skip = {".git", "__pycache__", "runs", "build", "dist"}

        def kept(p: Path) -> bool:
            return not any(part in skip or part.startswith(".") for part in p.relative_to(ROOT).parts)

        files = [p for p in ROOT.rglob("*") if p.is_file() and kept(p)]
    return [p for p in files if p.is_file() and p.relative_to(ROOT).parts[0] != "results"]


def test_no_file_cites_a_document_outside_the_repository():
    citing = []
    for path in _repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files (images, wheels) cite nothing
        if OUTSIDE_DOC in text:
            citing.append(str(path.relative_to(ROOT)))
    assert not citing, (
        f"these files cite {OUTSIDE_DOC}, which is not in the repository; cite docs/reference-numbers.md: "
        f"{citing}"
    )


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; keep it at most 220, details go to docs/"


def test_readme_test_command_follows_its_marker():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert "<!-- test-command -->" in lines, "README.md lacks the line <!-- test-command -->"
    after = lines[lines.index("<!-- test-command -->") + 1 :]
    assert after[0].strip() == "```bash", "the marker must be followed by a ```bash block"
    assert after[1] == TEST_COMMAND
    assert after[2].strip() == "```", "the test command block must hold that single line"


def test_readme_quickstart_runs_the_complexity_study():
    text = README.read_text(encoding="utf-8")
    assert f"```bash\n{RUN_COMMAND}\n```" in text
