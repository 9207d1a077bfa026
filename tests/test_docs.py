"""The front page and the docs pages hold: every Python block runs as written from the repository root, and every
relative link and #anchor of README.md and docs/*.md resolves (GitHub's heading anchors)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = "tests/test_models.py runs this block"  # docs/design.md's example head, run with the registry restored
BLOCKS = [(page, block) for page in PAGES
          for marker, block in re.findall(r"(<!--[^\n]*-->\n)?```python\n(.*?)```", page.read_text(), flags=re.S)
          if MARKER not in marker]


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # no heading inside a code block
    found, counts = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        name = anchor(heading)
        found.add(name if name not in counts else f"{name}-{counts[name]}")
        counts[name] = counts.get(name, 0) + 1
    return found


def links(page: Path):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def broken_links(page: Path):
    out = []
    for target in links(page):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            out.append(f"{target}: no {resolved.relative_to(REPO) if REPO in resolved.parents else resolved}")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            out.append(f"{target}: {resolved.name} has no heading #{fragment}")
    return out


def test_every_page_has_python_blocks_or_links_and_the_front_page_is_short():
    readme = (REPO / "README.md").read_text().splitlines()
    assert len(readme) <= 300, f"README.md has {len(readme)} lines: the detail belongs in docs/"
    assert "make demo" in "\n".join(readme[:15]) and "make test" in "\n".join(readme[:15])
    assert len(PAGES) >= 5 and BLOCKS and any(page.name == "README.md" for page, _ in BLOCKS)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_and_anchor_resolves(page):
    assert not broken_links(page), broken_links(page)


def test_the_link_check_fails_on_a_broken_link_or_anchor(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## A section, with `code`\n")
    page.write_text("# Title\n\n[ok](other.md#a-section-with-code) [self](#title) [gone](missing.md) "
                    "[no anchor](other.md#nowhere) `[in code](missing2.md)`\n")
    assert broken_links(page) == [f"missing.md: no {tmp_path / 'missing.md'}", "other.md#nowhere: other.md has no heading "
                                  "#nowhere"]


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"{BLOCKS[i][0].name}-{i}")
def test_a_python_block_runs_as_written(index):
    page, block = BLOCKS[index]
    result = subprocess.run([sys.executable, "-c", block], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{page.name}: a block fails:\n{block}\n{result.stderr[-2000:]}"
