"""Reports: what fit and compare leave behind, read as a person (in Chromium) and as a program would."""

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from graft import api, evaluation, report
from graft.comparison import compare
from graft.errors import GraftError
from graft.report import pages, write_report
from graft.train.settings import TrainSettings
from tests.conftest import make_shapes
from tests.test_cli import graft

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SETTINGS = TrainSettings(epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("report") / "shapes")


@pytest.fixture(scope="module")
def run(shapes_data: Path) -> Path:
    out = shapes_data.parent / "run"
    api.fit(str(shapes_data), backbone="smallcnn", strategy="scratch", out=out, settings=SETTINGS, tensorboard=True)
    return out


@pytest.fixture(scope="module")
def comparison(shapes_data: Path) -> Path:
    out = shapes_data.parent / "compare"
    compare(str(shapes_data), ["frozen", "scratch"], backbone="smallcnn", out=out, settings=SETTINGS)
    return out


def test_fit_writes_a_self_contained_report(run: Path) -> None:
    html = (run / "report.html").read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"?https?:", html), "the page must not load anything from the network"
    for chart in ("chart-learning-curves", "chart-confusion-matrix", "chart-per-class"):
        assert f'id="{chart}"' in html
    scores = evaluation.evaluate(run, str(Path(json.loads((run / "split.json").read_text())["root"])), per_image=True)
    wrong = sorted((p for p in scores.per_image if p["true"] != p["predicted"]), key=lambda p: -p["probability"])
    thumbnails = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', html)
    assert thumbnails == [p["path"] for p in wrong[: pages.GALLERY_SIZE]]  # the surest mistakes, surest first
    section = re.search(r'<section id="settings">(.*?)</section>', html, re.DOTALL)  # the page's own markup, not plotly.js
    card = re.search(r'<div class="card"><h3>training</h3><dl>(.*?)</dl>', section[1] if section else "")
    assert card, "the training settings card is missing"
    shown = dict(re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", card[1]))
    assert shown["lr"] == "0.001" and shown["epochs"] == "2"  # settings shown as saved, not rounded away


def test_tensorboard_events_hold_every_epoch(run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "seconds/epoch"} <= set(events.Tags()["scalars"])
    val = events.Scalars("accuracy/val")
    assert [e.step for e in val] == list(range(1, len(metrics) + 1))
    assert [e.value for e in val] == pytest.approx([m["val_accuracy"] for m in metrics])


def test_a_failing_report_only_warns(
    shapes_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(folder: Path, evaluation: object = None) -> Path:
        raise ValueError("plotting went wrong\nsecond line")

    monkeypatch.setattr(pages, "run_page", broken)
    outcome = api.fit(
        str(shapes_data), backbone="smallcnn", strategy="frozen", out=tmp_path / "run", settings=TrainSettings(epochs=1, batch_size=16)
    )
    assert (tmp_path / "run" / "result.json").is_file() and outcome.result.epochs == 1
    assert not (tmp_path / "run" / "report.html").exists()
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warning) == 1 and "ValueError: plotting went wrong" in warning[0] and "graft report" in warning[0]


def test_report_command_and_its_errors(run: Path, tmp_path: Path) -> None:
    (run / "report.html").unlink()
    result = graft("report", str(run))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run / "report.html") and (run / "report.html").is_file()
    with pytest.raises(GraftError, match="holds no graft run"):
        write_report(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "metrics.jsonl").write_text("{not json")
    with pytest.raises(GraftError, match="metrics.jsonl.*damaged"):
        write_report(broken)


def test_report_without_the_test_images_says_so(run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    split = json.loads((moved / "split.json").read_text())
    (moved / "split.json").write_text(json.dumps({**split, "root": str(tmp_path / "gone")}))
    html = write_report(moved).read_text()
    assert "could not be read again" in html and "chart-learning-curves" in html


@pytest.mark.slow
def test_compare_writes_a_comparison_report_linking_each_strategy(comparison: Path) -> None:
    html = (comparison / "report.html").read_text()
    assert 'id="chart-accuracy-vs-time"' in html and 'id="chart-val-accuracy"' in html
    for strategy in ("frozen", "scratch"):
        assert f'href="{strategy}/report.html"' in html
        assert (comparison / strategy / "report.html").is_file()
    index = report.pages.experiment_page(comparison.parent, [comparison, comparison / "frozen"])
    assert 'href="compare/report.html"' in index.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium driven by chromedriver, with a fresh profile and no network to reach."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Chromium is not installed: apt-get install -y --no-install-recommends chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="graft-chromium-")
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",  # any request to the internet fails, loudly
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


CHART_SIZES = """
return [...document.querySelectorAll('.plotly-graph-div')].map(div => {
  const box = div.getBoundingClientRect(), svg = div.querySelector('svg.main-svg');
  return {id: div.id, width: box.width, height: box.height, svg: svg ? svg.getBoundingClientRect().width : 0,
          traces: div.querySelectorAll('.trace, .hm, .heatmaplayer image').length};
});
"""


def _open(browser: object, page: Path) -> list[dict[str, object]]:
    browser.get(page.as_uri())
    browser.execute_async_script("const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done));")
    return browser.execute_script(CHART_SIZES)


@pytest.mark.slow
def test_reports_render_in_chromium(browser: object, run: Path, comparison: Path, tmp_path: Path) -> None:
    for page, expected in (
        (run / "report.html", {"chart-learning-curves", "chart-confusion-matrix", "chart-per-class"}),
        (comparison / "report.html", {"chart-accuracy-vs-time", "chart-val-accuracy", "chart-curves-frozen", "chart-curves-scratch"}),
    ):
        charts = _open(browser, page)
        assert {c["id"] for c in charts} == expected, charts
        for chart in charts:
            assert chart["width"] > 300 and chart["height"] > 200 and chart["svg"] > 300 and chart["traces"] > 0, chart
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    _open(browser, run / "report.html")
    images = browser.execute_script("return [...document.querySelectorAll('.gallery img')].map(i => i.naturalWidth)")
    assert all(width > 0 for width in images)
    assert browser.save_screenshot(str(tmp_path / "report.png"))
