"""Every link in a report is a relative path graft made to a page it wrote, whatever the user's folders are called."""

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from graft import api
from graft.errors import GraftError
from graft.report import write_report
from graft.train.settings import TrainSettings
from tests.conftest import make_shapes

HOSTILE = "javascript:alert(1)"


class Links(HTMLParser):
    """Every URL-bearing attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [(name, value or "") for name, value in attrs if name in ("href", "src", "action", "formaction", "xlink:href")]


def urls(page: Path) -> list[tuple[str, str]]:
    parser = Links()
    parser.feed(page.read_text())
    return parser.urls


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experiment folder whose run, comparison, strategy and class are all named ``javascript:...``."""
    root = tmp_path_factory.mktemp("links")
    data = make_shapes(root / "data")
    shutil.move(data / "ring", data / HOSTILE)
    folder = root / "experiment"
    run = folder / HOSTILE
    api.fit(str(data), backbone="smallcnn", strategy="scratch", out=run, settings=TrainSettings(epochs=1, batch_size=16), report=False)
    comparison = folder / "javascript:alert(2)"
    shutil.copytree(run, comparison / "javascript:alert(3)")
    shutil.copy(run / "split.json", comparison / "split.json")
    row = {**json.loads((run / "result.json").read_text()), "strategy": "javascript:alert(4)", "run_dir": "/elsewhere/javascript:alert(3)"}
    (comparison / "comparison.json").write_text(json.dumps([row]))
    write_report(folder)
    return folder


def test_every_link_is_a_page_graft_wrote_beside_it(experiment: Path) -> None:
    pages = sorted(experiment.rglob("report.html"))
    assert len(pages) == 4  # the experiment, its comparison, and the two runs
    followed = 0
    for page in pages:
        for attribute, url in urls(page):
            if attribute == "src":
                assert url.startswith("data:image/png;base64,"), (page, url)  # thumbnails graft encoded
                continue
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc and not url.startswith("/"), (page, url)
            if url.startswith("#"):
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.name == "report.html" and target.is_file() and target.parent.parent == page.parent.resolve(), (page, url)
            followed += 1
    assert followed == 4  # experiment -> run and comparison; comparison -> its run, from the table and from its section


def test_a_comparison_naming_a_folder_outside_it_is_refused(experiment: Path) -> None:
    comparison = experiment / "javascript:alert(2)"
    rows = json.loads((comparison / "comparison.json").read_text())
    (comparison / "comparison.json").write_text(json.dumps([{**rows[0], "run_dir": "/x/.."}]))
    try:
        with pytest.raises(GraftError, match=r"names '\.\.' as a run directory"):
            write_report(comparison)
    finally:
        (comparison / "comparison.json").write_text(json.dumps(rows))
