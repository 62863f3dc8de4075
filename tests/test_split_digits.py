"""The split-MNIST transfer experiment end to end through the command line (real digits, real training)."""

import json
from pathlib import Path

import pytest

from graft.results import COLUMNS
from tests.test_cli import graft


@pytest.mark.slow
def test_pretrain_on_0_to_6_then_compare_on_7_to_9(tmp_path: Path) -> None:
    source = tmp_path / "digits-0to6"
    pretrained = graft("pretrain", "digits", "--classes", "0-6", "--epochs", "3", "--out", str(source), "--json")
    assert pretrained.returncode == 0, pretrained.stderr
    assert json.loads(pretrained.stdout)["test_accuracy"] > 0.95

    out = tmp_path / "compare"
    compared = graft(
        "compare",
        "digits",
        "--classes",
        "7-9",
        "--backbone",
        str(source),
        "--strategies",
        "frozen,full,scratch",
        "--epochs",
        "4",
        "--out",
        str(out),
        "--json",
    )
    assert compared.returncode == 0, compared.stderr
    rows = {row["strategy"]: row for row in json.loads(compared.stdout)}
    assert set(rows) == {"frozen", "full", "scratch"}
    assert set(COLUMNS) <= set(rows["frozen"])  # every column of the table, and the run's own fields
    # Frozen features from 0-6 separate 7-9 well after only 3 source epochs; only the head trains.
    assert rows["frozen"]["test_accuracy"] >= 0.95
    assert rows["frozen"]["trainable_params"] < rows["full"]["trainable_params"] == rows["full"]["total_params"]
    assert all(row["peak_memory_mb"] > 0 and row["train_seconds"] > 0 for row in rows.values())
    assert (out / "comparison.csv").read_text().splitlines()[0].startswith("strategy,test_accuracy")
    assert json.loads((out / "comparison.json").read_text())[0]["strategy"] == "frozen"
    # Every strategy trained on the very same split.
    splits = {(out / name / "split.json").read_text() for name in rows}
    assert len(splits) == 1 and splits == {(out / "split.json").read_text()}
