"""graft as a library: the public face, one run description shared with the CLI, options checked up front."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import graft
from graft.backbones import SmallCNN
from graft.config import FitConfig
from graft.data.dataset import load_data
from graft.errors import GraftError
from graft.model import GraftModel
from graft.train.checkpoint import CHECKPOINT, load_checkpoint
from tests.test_cli import assert_user_error
from tests.test_cli import graft as cli

FAST = {"backbone": "smallcnn", "epochs": 2, "batch_size": 16}


@pytest.mark.slow
def test_the_readme_snippet_runs_and_the_cli_writes_the_same_config(tmp_path: Path) -> None:
    run = graft.fit("digits", classes="7-9", strategy="scratch", out=tmp_path / "api", report=False, **FAST)
    assert isinstance(run, graft.Run) and run.path == tmp_path / "api"
    assert run.test_accuracy > 0.8  # three digit classes: a small CNN learns them in two epochs
    assert [r["epoch"] for r in run.history] == [1, 2] and run.classes == ["7", "8", "9"]
    images = sorted((Path(json.loads((run.path / "split.json").read_text())["root"]) / "8").iterdir())[:4]
    predictions = run.predict(images, top_k=2)
    assert [len(p.top) for p in predictions] == [2] * 4 and sum(p.label == "8" for p in predictions) >= 3
    evaluation = run.evaluate()
    assert evaluation.part == "test" and evaluation.accuracy == pytest.approx(run.test_accuracy)
    loaded = graft.load(run.path)
    assert loaded.config == run.config and loaded.result == run.result
    assert Path(run.export("torchscript")["model"]).is_file()
    assert run.report() == run.path / "report.html"

    via_cli = cli("fit", "digits", "--classes", "7-9", "--strategy", "scratch", "--backbone", "smallcnn", "--epochs", "2", "--batch-size", "16",
                  "--out", str(tmp_path / "cli"), "--no-report")  # fmt: skip
    assert via_cli.returncode == 0, via_cli.stderr
    assert (tmp_path / "cli" / "config.json").read_text() == (tmp_path / "api" / "config.json").read_text()
    assert graft.load(tmp_path / "cli").result.test_accuracy == pytest.approx(run.test_accuracy)  # same seed, same run


def test_a_config_round_trips_and_is_what_the_checkpoint_holds(shapes: Path, tmp_path: Path) -> None:
    config = FitConfig.create(
        str(shapes), strategy="finetune", unfreeze=2, epochs=1, lr=0.01, **{k: v for k, v in FAST.items() if k != "epochs"}
    )
    assert config.strategy_options == {"unfreeze": 2} and config.settings.lr == 0.01
    assert FitConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    run = graft.fit(config, out=tmp_path / "run", report=False)
    assert FitConfig.from_dict(json.loads((run.path / "config.json").read_text())["fit"]) == config


def test_every_bad_option_is_refused_before_any_work(shapes: Path, tmp_path: Path) -> None:
    cases = [
        ({"epochs": -1}, "--epochs -1 is out of range"),
        ({"epochs": 0}, "--epochs 0 is out of range"),
        ({"batch_size": 0}, "--batch-size 0"),
        ({"lr": 0.0}, "--lr 0.0"),
        ({"epochs": "5"}, "--epochs must be a whole number"),
        ({"augment": "heavy"}, "unknown --augment 'heavy'"),
        ({"head": "deep"}, "unknown --head 'deep'"),
        ({"precision": "fp8"}, "unknown --precision 'fp8'"),
        ({"per_class": 0}, "--per-class 0"),
        ({"workers": -2}, "--workers -2"),
        ({"strategy": "full", "unfreeze": 2}, "--unfreeze does not apply to strategy 'full'"),
        ({"strategy": "frozen", "freeze_first": 3}, "--freeze-first does not apply to strategy 'frozen'"),
        ({"strategy": "finetune", "unfreeze": 0}, "--unfreeze must be at least 1"),
        ({"bad_images": "ignore"}, "unknown --bad-images policy 'ignore'"),
        ({"colour": "red"}, "unknown option 'colour'"),
    ]
    for options, message in cases:
        with pytest.raises(GraftError, match=message.replace("(", r"\(").replace(".", r"\.")):
            graft.fit(str(shapes), out=tmp_path / "run", **options)
        assert not (tmp_path / "run").exists()


def test_int8_without_compiling_is_refused_up_front(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFT_COMPILE", "off")
    with pytest.raises(GraftError, match="--precision int8 runs through a compiled network"):
        FitConfig.create(str(shapes), precision="int8")
    result = cli("--compile", "off", "fit", str(shapes), "--precision", "int8", "--strategy", "full", "--out", str(tmp_path / "run"))
    assert_user_error(result, "--precision int8")
    assert not (tmp_path / "run").exists()


def test_cli_option_errors_are_one_line(shapes: Path, tmp_path: Path) -> None:
    assert_user_error(cli("fit", str(shapes), "--epochs", "-1", "--out", str(tmp_path / "a")), "--epochs -1 is out of range")
    assert_user_error(
        cli("fit", str(shapes), "--strategy", "full", "--unfreeze", "2", "--out", str(tmp_path / "b")), "does not apply to strategy 'full'"
    )
    assert_user_error(cli("compare", str(shapes), "--strategies", "frozen,full", "--unfreeze", "2"), "applies to none of the strategies")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_predict_checks_top_k_and_threshold_before_loading(tmp_path: Path) -> None:
    assert_user_error(cli("predict", str(tmp_path), str(tmp_path), "--top-k", "0"), "--top-k 0 is out of range")
    assert_user_error(cli("predict", str(tmp_path), str(tmp_path), "--threshold", "2"), "--threshold 2.0 is not a probability")


def test_compare_gives_each_strategy_only_its_own_options(shapes: Path, tmp_path: Path) -> None:
    results = graft.compare(str(shapes), ["frozen", "finetune"], unfreeze=1, out=tmp_path / "cmp", report=False, **FAST)
    assert sorted(r.strategy for r in results) == ["finetune", "frozen"]  # best first (tests/test_ranking.py)
    saved = [FitConfig.from_dict(json.loads((tmp_path / "cmp" / s / "config.json").read_text())["fit"]) for s in ("frozen", "finetune")]
    assert [c.strategy_options for c in saved] == [{}, {"unfreeze": 1}]
    assert (tmp_path / "cmp" / "frozen" / "split.json").read_text() == (tmp_path / "cmp" / "finetune" / "split.json").read_text()


def test_the_lower_rung_trains_a_model_in_memory(shapes: Path) -> None:
    split = graft.make_split(load_data(str(shapes)), seed=0)
    model = GraftModel(SmallCNN(), len(split.classes))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = graft.train_model(model, graft.get_strategy("frozen"), split, graft.TrainSettings(epochs=2, batch_size=16))
    assert isinstance(result, graft.TrainResult) and result.epochs == 1 and "solver" in result.history[0]  # a linear head: solved
    after = model.state_dict()
    assert torch.equal(after["backbone.stages.0.0.weight"], before["backbone.stages.0.0.weight"])  # frozen
    assert not torch.equal(after["head.weight"], before["head.weight"])  # the head trained


def test_the_checkpoint_holds_the_run_description(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_resume import crash_after

    with monkeypatch.context() as patch:
        crash_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            graft.fit(str(shapes), strategy="full", out=tmp_path / "run", **FAST)
    config = FitConfig.from_dict(load_checkpoint(tmp_path / "run" / CHECKPOINT)["config"])
    assert config == FitConfig.create(str(shapes), strategy="full", **FAST)
    assert graft.resume(tmp_path / "run").config == config


def test_predict_and_evaluate_use_the_preprocessing_saved_in_the_run(shapes: Path, tmp_path: Path) -> None:
    """The preprocessing in config.json (what export writes too) is what prediction applies, not one rebuilt from the backbone."""
    run = graft.fit(str(shapes), strategy="scratch", out=tmp_path / "run", report=False, **FAST)
    image = shapes / "ring" / "000.png"
    before = run.predict(image, top_k=3)[0].top
    config = json.loads((run.path / "config.json").read_text())
    config["preprocessing"]["mean"] = [0.99]  # what the run says its inputs are normalised with
    (run.path / "config.json").write_text(json.dumps(config))
    after = graft.load(run.path).predict(image, top_k=3)[0].top
    assert after != before


@pytest.mark.slow
def test_compare_runs_from_a_script_without_a_main_guard(shapes: Path, tmp_path: Path) -> None:
    """A child that re-ran the caller's script (multiprocessing's spawn) would recurse here; a fresh interpreter does not."""
    script = tmp_path / "compare_shapes.py"
    script.write_text(
        "import graft\n"
        f"results = graft.compare({str(shapes)!r}, ['frozen', 'scratch'], backbone='smallcnn', epochs=1, batch_size=16, out={str(tmp_path / 'cmp')!r}, report=False)\n"
        "print(sorted(r.strategy for r in results))\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['frozen', 'scratch']"
    assert sorted(row["strategy"] for row in json.loads((tmp_path / "cmp" / "comparison.json").read_text())) == ["frozen", "scratch"]
