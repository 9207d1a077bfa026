"""report.py: the HTML report of a root, opened in a real browser (headless Chromium through Playwright), and its
refusals. The screenshot of the tiny report is kept in tests/artifacts/ (not committed)."""
import json
import shutil
from pathlib import Path

import pytest

from helpers import SMALL_MLP, TINY, run_script

pytestmark = pytest.mark.xdist_group("report")  # the module's tiny root is trained once, in one worker
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """std and encoder_memory on 64 DIGITS images, 2 runs of 2 epochs each, with validation accuracy in the
    histories."""
    root = tmp_path_factory.mktemp("report") / "models"
    for modality in ("std", "encoder_memory"):
        run_script("train.py", f"--modality={modality}", f"--config={TINY}", "--runs=2", "--epochs=2",
                   "--train_examples=64", "--set=eval_every=1", f"--output_dir={root}",
                   *([] if modality == "std" else [SMALL_MLP]))
    return root


def browser():
    if CHROMIUM is None:
        pytest.fail("the report test needs Chromium: install Debian's chromium (apt-get install chromium), as make "
                    "test does; it does not skip without it")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def test_the_report_opens_in_a_browser_with_every_image_table_and_gallery(tiny_root, tmp_path):
    output = tmp_path / "report"
    out = run_script("report.py", f"--root={tiny_root}", f"--output={output}", "--images=2", "--n_steps=4").stdout
    assert "Written:" in out and (output / "index.html").is_file()
    with browser() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = chromium.new_page(viewport={"width": 1366, "height": 900})
        errors, failed = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.goto((output / "index.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
        text = page.inner_text("body")
        galleries = page.evaluate("Array.from(document.querySelectorAll('.gallery')).map(g => "
                                  "[g.dataset.checkpoint, g.querySelectorAll('img').length])")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report_tiny.png"), full_page=True)
        chromium.close()
    assert not errors and not failed, (errors, failed)
    assert images and all(width > 0 for _, width in images), images
    assert not any(src.startswith("http") for src, _ in images), "the page loads no remote asset"
    for modality in ("std", "encoder_memory"):
        results = json.loads((tiny_root / "DIGITS" / modality / "shufflenet" / "64" / "results.json").read_text())
        assert f"{results['mean']:.2f} ± {results['std']:.2f}" in text, modality
    checkpoint = str(tiny_root / "DIGITS" / "encoder_memory" / "shufflenet" / "64" / "1.pt")
    assert [g[0] for g in galleries] == [checkpoint], "one gallery, of the memory head's first run"
    assert galleries[0][1] == 2 + 1 + 1, "its 2 memory images, 1 heatmap figure and the support's distribution"
    gallery = output / "gallery" / "DIGITS_shufflenet_encoder_memory_grid_64"
    assert sorted(p.name for p in gallery.iterdir()) == ["0.png", "1.png", "heatmaps_0.png", "support.png"]
    assert "Learning curves" in text and "Curves missing" not in text
    # the paired differences of the two rows (2 runs each, seeds 0 and 1) and their forest plot
    from core.collect import collect_accuracy
    from core.paired import paired_rows
    line = paired_rows(collect_accuracy(tiny_root), "std").lines[0]
    assert line.label == "encoder_memory" and line.found.pairs == 2 and line.found.text() in text
    assert "figures/paired_DIGITS.png" in [src for src, _ in images]
    from core.config import load_config  # each cell's config and command: the runs' threads, a config that loads
    assert text.count("OMP_NUM_THREADS=1 python train.py --config=") == 2, "the runs' one thread (tests/conftest.py)"
    configs = sorted((output / "configs").glob("*.yaml"))
    assert len(configs) == 2 and all(load_config(path).precision == "fp32" for path in configs), configs


def test_a_run_without_history_gets_its_tables_and_its_curves_marked_missing(tiny_root, tmp_path):
    root = tmp_path / "old"
    shutil.copytree(tiny_root / "DIGITS" / "std", root / "DIGITS" / "std")
    path = root / "DIGITS" / "std" / "shufflenet" / "64" / "results.json"
    results = json.loads(path.read_text())
    for run in results["runs"]:
        del run["history"]
    path.write_text(json.dumps(results))
    run_script("report.py", f"--root={root}", f"--output={tmp_path / 'r'}")
    page = (tmp_path / "r" / "index.html").read_text()
    assert "Curves missing" in page and f"{results['mean']:.2f} ± {results['std']:.2f}" in page


def test_a_report_over_an_earlier_one_leaves_only_its_own_files(tiny_root, tmp_path):
    output = tmp_path / "r"
    run_script("report.py", f"--root={tiny_root}", f"--output={output}", "--images=1", "--heatmaps=false")
    assert len(list((output / "configs").glob("*.yaml"))) == 2 and (output / "gallery").is_dir()
    mine = [output / "notes.txt", output / "figures" / "my_plot.png", output / "configs" / "mine.yaml"]
    for path in mine:
        path.write_text("the user's own")
    out = run_script("report.py", f"--root={tiny_root}", f"--output={output}", "--modality=std").stdout
    # its encoder_memory config, curves and gallery images (memory, support), the std against Memory Wrap figure, the
    # paired differences
    assert "(1 cells, 0 galleries; removed 6 files of an earlier report)" in out, out
    assert sorted(p.name for p in (output / "configs").iterdir()) == ["DIGITS_shufflenet_std_grid_64.yaml", "mine.yaml"]
    assert not (output / "gallery").exists() and all(path.read_text() == "the user's own" for path in mine)
    page = (output / "index.html").read_text()
    linked = {p.relative_to(output).as_posix() for p in output.rglob("*.png") if p.name != "my_plot.png"}
    assert linked and all(f'src="{name}"' in page for name in linked), "every figure left is the page's"


def test_a_folder_of_files_no_report_wrote_is_refused_and_left_as_it_was(tiny_root, tmp_path):
    output = tmp_path / "mine"
    (output / "figures").mkdir(parents=True)
    (output / "index.html").write_text("my page")
    (output / "figures" / "plot.png").write_text("my plot")
    result = run_script("report.py", f"--root={tiny_root}", f"--output={output}", check=False)
    assert result.returncode == 1 and "holds files no report wrote (figures, figures/plot.png, index.html)" in \
        result.stderr, result.stderr
    assert (output / "index.html").read_text() == "my page" and sorted(p.name for p in output.rglob("*")) == [
        "figures", "index.html", "plot.png"]


@pytest.mark.parametrize("case", ["empty", "file", "other", "unwritable"])
def test_report_refuses_what_it_cannot_report_in_one_line(tiny_root, tmp_path, case):
    root, output = tiny_root, tmp_path / "r"
    if case == "empty":
        root = tmp_path / "empty"
        root.mkdir()
    elif case == "file":
        root = tmp_path / "a.txt"
        root.write_text("x")
    elif case == "other":
        root = tmp_path / "other"
        (root / "x").mkdir(parents=True)
        (root / "x" / "results.json").write_text("[1, 2]")
    else:
        output = tmp_path / "a-file"
        output.write_text("x")
    result = run_script("report.py", f"--root={root}", f"--output={output}", check=False)
    assert result.returncode == 1 and result.stderr.strip().startswith("error:"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_cells_config_pins_what_auto_chose_in_its_runs(tmp_path):
    """The report's config of a cell repeats its runs' computation: what their autotune chose is written in."""
    import yaml

    from core.config import load_config
    from core.report import depthwise_layers, pinned
    saved = {**load_config(TINY).to_dict(), "precision": "auto", "memory_format": "auto", "depthwise_fp32": "auto"}
    layers = sorted(depthwise_layers(saved, "encoder_memory"))
    assert len(layers) == 19 and all(name.startswith("encoder.") for name in layers), layers  # ShuffleNetV2 0.5
    bf16 = {"precision": "bf16", "memory_format": "channels_last"}
    config, notes = pinned(saved, [{**bf16, "fp32_layers": []}] * 2, "encoder_memory")
    assert (config["precision"], config["memory_format"], config["depthwise_fp32"], notes) == (
        "bf16", "channels_last", "none", [])
    assert pinned(saved, [{**bf16, "fp32_layers": layers}], "encoder_memory")[0]["depthwise_fp32"] == "all"
    unknown = {**saved, "model": "a-network-of-another-version"}  # its layers cannot be listed: said, not guessed
    assert depthwise_layers(unknown, "std") is None
    assert pinned(unknown, [{**bf16, "fp32_layers": layers}], "std")[0]["depthwise_fp32"] == layers, \
        "the runs' layers are what they computed, whether or not this version can list the model's"
    some = [layers[5], layers[0]]  # a subset, in the order the record lists it
    config, notes = pinned(saved, [{**bf16, "fp32_layers": some}] * 2, "encoder_memory")
    assert (config["depthwise_fp32"], notes) == (some, [])
    config, notes = pinned(saved, [{**bf16, "fp32_layers": some}, {**bf16, "fp32_layers": layers[:3]}], "std")
    assert config["depthwise_fp32"] == "auto" and len(notes) == 1 and "(2 or 3 depthwise convolutions" in notes[0]
    runs = [{**bf16, "fp32_layers": []}, {"precision": "fp32", "memory_format": "channels_last"}]
    config, notes = pinned(saved, runs, "encoder_memory")
    assert (config["precision"], config["memory_format"]) == ("auto", "channels_last")
    assert notes == ["precision: auto, which its runs resolved to bf16 and fp32"]
    old = {key: value for key, value in saved.items() if key != "depthwise_fp32"}  # saved before the key existed
    assert pinned(old, [bf16], "std")[0]["depthwise_fp32"] == "none"
    fp32 = pinned(saved, [{"precision": "fp32", "memory_format": "contiguous"}], "std")[0]
    assert (fp32["precision"], fp32["memory_format"], fp32["depthwise_fp32"]) == ("fp32", "contiguous", "auto")
    path = tmp_path / "cell.yaml"  # what the report writes loads as a config
    path.write_text(yaml.safe_dump(pinned(saved, [{**bf16, "fp32_layers": []}], "std")[0], sort_keys=False))
    loaded = load_config(path)
    assert (loaded.precision, loaded.memory_format, loaded.depthwise_fp32) == ("bf16", "channels_last", "none")
    path.write_text(yaml.safe_dump(pinned(saved, [{**bf16, "fp32_layers": some}], "std")[0], sort_keys=False))
    assert load_config(path).depthwise_fp32 == tuple(some)
