"""``graft predict`` as other programs read it: CSV and JSON, lists of files, low-confidence flags."""

import csv
import io
import json
from pathlib import Path

import pytest

from graft import api, evaluation
from graft.errors import GraftError
from graft.predictions import output_format, read_list, to_csv
from graft.train.settings import TrainSettings
from tests.conftest import make_shapes
from tests.test_cli import assert_user_error, graft


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    make_shapes(root / "shapes", per_class=10)
    api.fit(
        str(root / "shapes"),
        backbone="smallcnn",
        strategy="scratch",
        out=root / "run",
        settings=TrainSettings(epochs=1, batch_size=16),
        report=False,
    )
    return root / "run"


def test_csv_has_top_k_and_the_low_confidence_flag(run: Path) -> None:
    shapes = run.parent / "shapes"
    rows = [p.to_dict() for p in evaluation.predict(run, [shapes / "ring"], top_k=2, threshold=0.9)]
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert list(table[0]) == ["path", "label", "probability", "low_confidence", "label_2", "probability_2"]
    assert len(table) == 10 and [r["path"] for r in table] == [r["path"] for r in rows]
    for line, row in zip(table, rows, strict=True):
        assert line["label"] == row["label"] and float(line["probability"]) == row["probability"]
        assert line["label_2"] == row["top"][1]["label"] and float(line["probability_2"]) >= 0
        assert line["low_confidence"] == str(row["probability"] < 0.9)
    assert "low_confidence" not in to_csv([p.to_dict() for p in evaluation.predict(run, [shapes / "ring" / "000.png"])])


def test_format_follows_the_output_suffix_and_refuses_contradictions(tmp_path: Path) -> None:
    assert output_format(None, None) == "table"
    assert output_format(None, tmp_path / "p.csv") == "csv"
    assert output_format(None, None, as_json=True) == "json"
    with pytest.raises(GraftError, match="needs --format csv or json"):
        output_format(None, tmp_path / "p.txt")
    with pytest.raises(GraftError, match="--json and --format csv disagree"):
        output_format("csv", None, as_json=True)
    with pytest.raises(GraftError, match="unknown --format 'xml'"):
        output_format("xml", None)


def test_list_file_paths_are_relative_to_the_list(run: Path, tmp_path: Path) -> None:
    shapes = run.parent / "shapes"
    listing = shapes / "list.txt"
    listing.write_text("# two images\nbar/000.png\n\n  ring/001.png  \n" + str(shapes / "cross" / "002.png") + "\n")
    assert read_list(listing) == [shapes / "bar" / "000.png", shapes / "ring" / "001.png", shapes / "cross" / "002.png"]
    (tmp_path / "bad.txt").write_text("bar/000.png\nnope.png\n")
    with pytest.raises(GraftError, match="bad.txt line 1: bar/000.png does not exist"):
        read_list(tmp_path / "bad.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(GraftError, match="names no images"):
        read_list(tmp_path / "empty.txt")


def test_cli_writes_json_and_csv_files(run: Path, tmp_path: Path) -> None:
    shapes = run.parent / "shapes"
    (tmp_path / "list.txt").write_text(f"{shapes / 'bar' / '000.png'}\n{shapes / 'ring' / '000.png'}\n")
    result = graft(
        "predict",
        str(run),
        str(shapes / "cross"),
        "--from-list",
        str(tmp_path / "list.txt"),
        "--threshold",
        "1",
        "--output",
        str(tmp_path / "p.json"),
    )
    assert result.returncode == 0 and result.stdout == "", result.stderr
    rows = json.loads((tmp_path / "p.json").read_text())
    assert (
        len(rows) == 12 and rows[-1]["path"].endswith("ring/000.png") and all(r["low_confidence"] == (r["probability"] < 1) for r in rows)
    )
    printed = graft("predict", str(run), str(shapes / "bar" / "001.png"), "--format", "csv", "--top-k", "3")
    assert printed.stdout.splitlines()[0] == "path,label,probability,label_2,probability_2,label_3,probability_3"
    assert_user_error(graft("predict", str(run), "--threshold", "1.5", str(shapes)), "--threshold 1.5 is not a probability")
