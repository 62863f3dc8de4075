"""The command line as a user meets it: one-line errors with exit code 2, JSON on stdout."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


def graft(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graft", *args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_bad_inputs_get_one_line_and_exit_code_2(tmp_path: Path, shapes: Path) -> None:
    assert_user_error(graft("fit", str(tmp_path / "missing")), "missing does not exist")
    assert_user_error(graft("fit", "digits", "--classes", "7-11"), "unknown class '10'")
    (shapes / "empty").mkdir()
    assert_user_error(graft("fit", str(shapes), "--bad-images", "fail"), "empty has no images")
    (shapes / "empty").rmdir()
    (shapes / "bar" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert_user_error(graft("fit", str(shapes), "--out", str(tmp_path / "r"), "--bad-images", "fail"), "broken.png")
    (shapes / "bar" / "broken.png").unlink()
    assert_user_error(graft("fit", str(shapes), "--strategy", "magic"), "unknown strategy 'magic'")
    assert_user_error(graft("evaluate", str(tmp_path), str(shapes)), "not a graft run directory")
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format_version": 0}))
    assert_user_error(graft("predict", str(run), str(shapes)), "run format 0")
    (run / "config.json").write_text("{not json")
    assert_user_error(graft("predict", str(run), str(shapes)), "cannot read")


@pytest.mark.slow
def test_fit_evaluate_predict_round_trip(tmp_path: Path, shapes: Path) -> None:
    out = tmp_path / "run"
    # batches of 4: 27 steps, enough for BatchNorm's running statistics to settle (batches of 16 made 6, and every test image one class)
    fitted = graft(
        "fit",
        str(shapes),
        "--backbone",
        "smallcnn",
        "--strategy",
        "scratch",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--out",
        str(out),
        "--json",
    )
    assert fitted.returncode == 0, fitted.stderr
    outcome = json.loads(fitted.stdout)
    assert outcome["strategy"] == "scratch" and outcome["test_accuracy"] >= 0.75, outcome  # bars, crosses, rings: learnable, chance is 1/3
    evaluated = json.loads(graft("evaluate", str(out), str(shapes), "--json").stdout)
    assert evaluated["accuracy"] == pytest.approx(outcome["test_accuracy"])
    predicted = json.loads(graft("predict", str(out), str(shapes / "ring"), "--top-k", "2", "--json").stdout)
    assert len(predicted) == 20 and all(len(p["top"]) == 2 for p in predicted)
    table = graft("predict", str(out), str(shapes / "ring" / "000.png"))
    assert table.returncode == 0 and "000.png" in table.stdout
