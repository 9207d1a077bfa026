"""The front page and the docs pages hold: every Python block runs as written from the repository root, and every
relative link and #anchor of README.md and docs/*.md resolves (GitHub's heading anchors)."""
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = "tests/test_models.py runs this block"  # docs/design.md's example head, run with the registry restored
# a block that uses the model file the commands before it write: run where a model.pt and a new_image.jpg exist
MODEL_MARKER = "runs beside a model.pt and a new_image.jpg"
FOUND = [(page, marker, block) for page in PAGES
         for marker, block in re.findall(r"(<!--[^\n]*-->\n)?```python\n(.*?)```", page.read_text(), flags=re.S)]
BLOCKS = [(page, block) for page, marker, block in FOUND if MARKER not in marker and MODEL_MARKER not in marker]
MODEL_BLOCKS = [(page, block) for page, marker, block in FOUND if MODEL_MARKER in marker]


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


def ignored_by_git(path: Path) -> bool:
    """A file the checkout has but .gitignore keeps out of every commit (a clone would lack it)."""
    if REPO not in path.parents or not (REPO / ".git").exists():
        return False
    return subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO).returncode == 0


def broken_links(page: Path):
    out = []
    for target in links(page):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            out.append(f"{target}: no {resolved.relative_to(REPO) if REPO in resolved.parents else resolved}")
        elif ignored_by_git(resolved):
            out.append(f"{target}: {resolved.relative_to(REPO)} is ignored by .gitignore, so a clone lacks it")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            out.append(f"{target}: {resolved.name} has no heading #{fragment}")
    return out


def test_every_page_has_python_blocks_or_links_and_the_front_page_is_short():
    readme = (REPO / "README.md").read_text().splitlines()
    assert len(readme) <= 300, f"README.md has {len(readme)} lines: the detail belongs in docs/"
    assert "make demo" in "\n".join(readme[:15]) and "make test" in "\n".join(readme[:15])
    assert len(PAGES) >= 5 and BLOCKS and any(page.name == "README.md" for page, _ in BLOCKS)


def placeholders(page: Path):
    """Words left to fill in: a line that is one upper-case word (RESULTS), or an UPPER_CASE name (TEST_TIME) in the
    prose or a code block's comment that the page never sets as an environment variable (NAME=value); names in code
    (`IMAGE_OR_FOLDER`, `OMP_NUM_THREADS`) are the code's."""
    text = page.read_text()
    comments = " ".join(re.findall(r"#[^\n]*", " ".join(re.findall(r"```.*?```", text, flags=re.S))))
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
    found = re.findall(r"^[A-Z][A-Z0-9_]{3,}$", prose, flags=re.M)
    found += [name for name in re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", prose + " " + comments)
              if f"{name}=" not in text]
    return sorted(set(found))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_page_holds_a_placeholder(page):
    assert not placeholders(page), f"{page.name} still has {placeholders(page)} to fill in"


def test_the_placeholder_check_finds_them(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nRESULTS\n\nIn TEST_TIME; `ATEN_CPU_CAPABILITY=avx2 make demo`, then ATEN_CPU_CAPABILITY "
                    "again, `IMAGE_OR_FOLDER`.\n\n```\nDIGITS OMP_NUM_THREADS=1\nmake  # NOTEBOOK_TIME\n```\n")
    assert placeholders(page) == ["NOTEBOOK_TIME", "RESULTS", "TEST_TIME"]


def missing_files(page: Path):
    """Files of the repository a page names in code spans (`core/paired.py`, `config/digits.yaml`) that do not exist:
    a path whose first folder is one of the repository's, so that other projects' paths (`paper/train.py`) pass."""
    folders = {path.name for path in REPO.iterdir() if path.is_dir() and not path.name.startswith(".")}
    names = re.findall(r"`([\w.-]+/[\w./-]+\.(?:py|yaml|ipynb|j2|sh|json|md))`", page.read_text())
    return sorted({name for name in names if name.split("/")[0] in folders and not (REPO / name).exists()})


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_file_a_page_names_exists(page):
    assert not missing_files(page), f"{page.name} names {missing_files(page)}, which the repository does not have"


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


def test_the_file_check_finds_a_file_that_moved(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("`core/paired.py`, `core/config.py`, `paper/train.py`, `config/digits.yaml`, `train.py`\n")
    assert missing_files(page) == ["core/config.py"]


def test_a_link_to_a_file_that_gitignore_keeps_out_is_broken():
    # git check-ignore answers for a path whether it exists or not: models/* is ignored, docs/images/ is not
    assert ignored_by_git(REPO / "models" / "link-test.png")
    assert not ignored_by_git(REPO / "docs" / "images" / "predict_cifar.png")


def run_block(block, tmp_path, cwd):
    """``python -c block`` in ``cwd`` with the repository importable (the block saved as a script and run as one:
    tests/helpers.run_script)."""
    from helpers import run_script

    script = tmp_path / "block.py"
    script.write_text(block)
    return run_script(script, cwd=cwd, env={"PYTHONPATH": str(REPO)}, timeout=120, check=False)


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"{BLOCKS[i][0].name}-{i}")
def test_a_python_block_runs_as_written(index, tmp_path):
    page, block = BLOCKS[index]
    result = run_block(block, tmp_path, cwd=REPO)
    assert result.returncode == 0, f"{page.name}: a block fails:\n{block}\n{result.stderr[-2000:]}"


@pytest.fixture(scope="module")
def model_file(trained, tmp_path_factory):
    """A model.pt (the session's DIGITS Memory Wrap model, exported) and a new_image.jpg, as the commands before such
    a block leave them."""
    import datasets
    from PIL import Image

    from helpers import run_script

    root, _ = trained
    folder = tmp_path_factory.mktemp("beside")
    run_script("export.py", f"--path_model={root / 'DIGITS' / 'encoder_memory' / 'shufflenet' / '128' / '1.pt'}",
               f"--output={folder / 'model.pt'}")
    _, test = datasets.load_dataset("DIGITS", None)
    Image.fromarray(test.images[0].permute(1, 2, 0).numpy()).save(folder / "new_image.jpg")
    return folder


@pytest.mark.xdist_group("trained")
@pytest.mark.parametrize("index", range(len(MODEL_BLOCKS)), ids=lambda i: f"{MODEL_BLOCKS[i][0].name}-model-{i}")
def test_a_block_that_uses_a_model_file_runs_beside_one(index, model_file, tmp_path):
    page, block = MODEL_BLOCKS[index]
    result = run_block(block, tmp_path, cwd=model_file)
    assert result.returncode == 0, f"{page.name}: a block fails:\n{block}\n{result.stderr[-2000:]}"
