"""--overwrite replaces graft's own runs, comparisons and experiments, and never a folder holding anything else."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graft import api
from graft.errors import DiskFull, GraftError
from graft.export import export
from graft.outdir import prepare_out
from graft.train.settings import TrainSettings
from tests.conftest import make_shapes
from tests.test_cli import assert_user_error

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real finished run with everything graft can put in one: report, TensorBoard events, an export."""
    root = tmp_path_factory.mktemp("outdir")
    data = make_shapes(root / "shapes")
    run = root / "run"
    api.fit(str(data), backbone="smallcnn", strategy="scratch", out=run, settings=TrainSettings(epochs=1, batch_size=16), tensorboard=True)
    export(run, "torchscript")
    (run / "checkpoint.safetensors.tmp").write_bytes(b"left by a write a crash cut short")
    return run


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target)
    return target


def experiment_like(finished: Path, root: Path) -> Path:
    """An experiment's layout: source/ a run, per-class-10/LABEL/ a comparison of two runs, experiment.csv."""
    folder = root / "experiment"
    copy_run(finished, folder / "source")
    comparison = folder / "per-class-10" / "smallcnn-digits"
    for strategy in ("frozen", "scratch"):
        copy_run(finished, comparison / strategy)
    shutil.copy(finished / "split.json", comparison / "split.json")
    rows = [{**json.loads((finished / "result.json").read_text()), "run_dir": str(comparison / s)} for s in ("frozen", "scratch")]
    (comparison / "comparison.json").write_text(json.dumps(rows))
    (comparison / "comparison.csv").write_text("strategy\nfrozen\nscratch\n")
    (folder / "experiment.csv").write_text("per_class,backbone\n10,smallcnn-digits\n")
    (folder / "experiment.json").write_text("[]")
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_replaced(out: Path) -> None:
    assert out.is_dir() and not any(out.iterdir())
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == [], "the moved-aside copy is deleted"


def test_a_users_file_is_never_deleted(tmp_path: Path) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("two years of work")
    for overwrite in (False, True):
        with pytest.raises(
            GraftError, match=r"thesis holds chapter1\.tex, which graft did not write.*choose another --out or remove it yourself"
        ):
            prepare_out(out, "x", overwrite=overwrite)
    assert (out / "chapter1.tex").read_text() == "two years of work"


def test_a_folder_without_a_graft_marker_is_not_graft_s(tmp_path: Path) -> None:
    out = tmp_path / "site"
    out.mkdir()
    (out / "report.html").write_text("<p>my own page</p>")
    with pytest.raises(GraftError, match="holds report.html"):
        prepare_out(out, "x", overwrite=True)
    assert (out / "report.html").read_text() == "<p>my own page</p>"


def test_a_finished_run_is_replaced(finished: Path, tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path / "run")
    assert {"report.html", "tensorboard", "export", "checkpoint.safetensors.tmp"} <= {p.name for p in run.iterdir()}
    with pytest.raises(GraftError, match="already exists and is not empty; choose another --out or pass --overwrite"):
        prepare_out(run, "x")
    assert prepare_out(run, "x", overwrite=True) == run
    assert_replaced(run)


def test_a_nested_comparison_and_experiment_are_replaced(finished: Path, tmp_path: Path) -> None:
    folder = experiment_like(finished, tmp_path)
    comparison = folder / "per-class-10" / "smallcnn-digits"
    (folder / "per-class-100").mkdir()  # a size the interrupted experiment never reached
    prepare_out(comparison, "x", overwrite=True)
    assert_replaced(comparison)
    prepare_out(folder, "x", overwrite=True)
    assert_replaced(folder)


def test_a_foreign_file_deep_inside_a_sub_run_is_refused(finished: Path, tmp_path: Path) -> None:
    folder = experiment_like(finished, tmp_path)
    (folder / "per-class-10" / "smallcnn-digits" / "scratch" / "notes.txt").write_text("what I tried")
    (folder / "source" / "tensorboard" / "mine").mkdir()
    before = tree(folder)
    with pytest.raises(GraftError, match=r"experiment holds per-class-10/smallcnn-digits/scratch/notes\.txt, which graft did not write"):
        prepare_out(folder, "x", overwrite=True)
    with pytest.raises(GraftError, match=r"source holds tensorboard/mine, which graft did not write"):
        prepare_out(folder / "source", "x", overwrite=True)
    assert tree(folder) == before


def test_a_link_is_refused_and_its_target_untouched(finished: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.csv").write_text("1,2,3")
    run = copy_run(finished, tmp_path / "run")
    shutil.rmtree(run / "export")
    os.symlink(precious, run / "export")
    with pytest.raises(GraftError, match="run holds export, which graft did not write"):
        prepare_out(run, "x", overwrite=True)
    assert (precious / "data.csv").read_text() == "1,2,3"


def test_the_old_run_comes_back_if_the_new_folder_cannot_be_made(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(finished, tmp_path / "run")
    before = tree(run)

    def disk_full(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "mkdir", disk_full)
    with pytest.raises(DiskFull, match="disk is full"):
        prepare_out(run, "x", overwrite=True)
    monkeypatch.undo()
    assert tree(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_file_or_a_fresh_default_is_handled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(GraftError, match="is a file, not a folder"):
        prepare_out(tmp_path / "file", "x", overwrite=True)
    monkeypatch.chdir(tmp_path)
    assert prepare_out(None, "shapes-frozen") == Path("runs/shapes-frozen")
    assert prepare_out(None, "shapes-frozen") == Path("runs/shapes-frozen-2")


def test_fit_overwrite_on_the_command_line_keeps_a_users_file(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "paper.pdf").write_bytes(b"%PDF-1.7 months of work")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "graft", "fit", str(shapes), "--backbone", "smallcnn", "--epochs", "1", "--out", str(out), "--overwrite"]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert_user_error(result, "paper.pdf", "choose another --out or remove it yourself")
    assert (out / "paper.pdf").read_bytes() == b"%PDF-1.7 months of work"
