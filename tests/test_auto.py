"""graft auto: the budget kept on a simulated clock, the test part read only by the winner, Ctrl-C keeps the best."""

import importlib
import json
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

import graft
import graft.data.loader
from graft.auto import Clock, parse_time
from graft.config import FitConfig
from graft.data.dataset import load_data
from graft.data.split import SPLIT_FILE, Split, make_split
from graft.errors import GraftError, Interrupted
from graft.model import GraftModel
from graft.sources import create_backbone
from graft.strategies import get_strategy
from graft.train.settings import TrainSettings
from graft.train.trainer import Trainer
from tests.test_cli import assert_user_error
from tests.test_cli import graft as graft_cli

auto_module = importlib.import_module("graft.auto")  # the module; graft.auto is its function


def ticking(step: float = 1.0, then: Callable[[], None] | None = None) -> Callable[[], float]:
    """A clock that moves ``step`` seconds each time it is read (training reads it before every batch), so a
    search runs on simulated time the same way on a loaded machine as on a quiet one; ``then`` runs at each read."""
    state = {"t": 0.0}

    def now() -> float:
        state["t"] += step
        if then is not None:
            then()
        return state["t"]

    return now


def rows(out: Path) -> list[dict]:
    return json.loads((out / "leaderboard.json").read_text())


def test_parse_time_reads_budgets_and_refuses_the_rest() -> None:
    assert [parse_time(t) for t in ("90s", "15m", "1h30m", "2h", "600", " 2m ")] == [90, 900, 5400, 7200, 600, 120]
    for bad in ("", "5x", "m", "1h-3m", "-5m", "3s"):
        with pytest.raises(GraftError, match="--time"):
            parse_time(bad)


def test_bad_time_on_the_command_line_is_one_line_and_exit_2(shapes: Path) -> None:
    assert_user_error(graft_cli("auto", str(shapes), "--time", "ten minutes"), "--time", "15m")


def test_the_budget_is_kept_on_a_simulated_clock(shapes: Path, tmp_path: Path) -> None:
    now = ticking()
    result = graft.auto(shapes, "2m", backbones="smallcnn", out=tmp_path / "auto", now=now, report=False)
    table = rows(tmp_path / "auto")
    started = [r for r in table if not r["stopped"].startswith("not started")]
    assert started[0]["strategy"] == "features"  # the answer that always exists comes first
    assert any(r["strategy"] != "features" for r in started), table  # the budget bought trained candidates too
    for row in started[1:]:  # nothing started that its estimate said could not finish before the finishing reserve
        assert row["estimated_seconds"] <= row["left_at_start"] - row["reserve"] + 0.1, row
    assert result.seconds <= 120
    assert sum(r["winner"] for r in table) == 1


def test_a_tiny_budget_still_returns_the_linear_probe(shapes: Path, tmp_path: Path) -> None:
    result = graft.auto(shapes, "10s", backbones="smallcnn", out=tmp_path / "auto", now=ticking())
    assert result.run.config.strategy == "features"
    assert all(r["stopped"].startswith("not started") for r in rows(tmp_path / "auto")[1:])
    assert "graft auto: candidates" in (tmp_path / "auto" / "report.html").read_text()  # the report shows the leaderboard
    assert (tmp_path / "auto" / "leaderboard.csv").read_text().count("\n") == len(result.leaderboard) + 1
    run = graft.load(tmp_path / "auto")
    assert run.test_accuracy > 0.5
    assert len(run.predict(next(shapes.glob("ring/*.png")))) == 1


def test_the_test_part_is_read_only_after_the_winner_is_chosen(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = make_split(load_data(str(shapes)), seed=0)
    test_paths = {p for p, _ in split.test}
    reads: list[tuple[str, bool]] = []  # (image, whether the winner had been chosen)
    chosen = {"yes": False}
    load_image, finish_run = graft.data.loader.load_image, auto_module.finish_run

    def spy_load(path: Path, *args):  # type: ignore[no-untyped-def]
        reads.append((str(Path(path).relative_to(shapes)), chosen["yes"]))
        return load_image(path, *args)

    def spy_finish(*args, **kwargs):  # type: ignore[no-untyped-def]
        chosen["yes"] = True
        return finish_run(*args, **kwargs)

    monkeypatch.setattr(graft.data.loader, "load_image", spy_load)
    monkeypatch.setattr(auto_module, "finish_run", spy_finish)
    graft.auto(shapes, "2m", backbones="smallcnn", out=tmp_path / "auto", now=ticking(), report=False)
    assert Split.load(tmp_path / "auto" / SPLIT_FILE).test == split.test  # the same seeded split graft fit makes
    before = [p for p, after in reads if not after]
    assert before and not test_paths & set(before)  # training and validation images only
    assert test_paths <= {p for p, after in reads if after}  # the winner's test pass read them all


def test_ctrl_c_during_a_candidate_leaves_the_best_run_so_far(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "auto"
    sent = {"yes": False}

    def interrupt_training() -> None:  # Ctrl-C once a trained candidate is running (the probe is done by then)
        running = (out / "leaderboard.json").is_file() and any(r["stopped"] == "running" and r["strategy"] != "features" for r in rows(out))
        if running and not sent["yes"]:
            sent["yes"] = True
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted, match="best model so far"):
        graft.auto(shapes, "10m", backbones="smallcnn", out=out, now=ticking(then=interrupt_training), report=False)
    table = rows(out)
    assert [r["stopped"] for r in table][-1] == "interrupted"
    assert [r["strategy"] for r in table if r["winner"]] == ["features"]
    run = graft.load(out)  # a finished, ordinary run directory
    assert run.test_accuracy == next(r["test_accuracy"] for r in table if r["winner"])
    assert run.evaluate().accuracy == pytest.approx(run.test_accuracy)


def test_the_trainer_stops_between_batches_when_told(shapes: Path) -> None:
    split = make_split(load_data(str(shapes)), seed=0)
    model = GraftModel(create_backbone("smallcnn"), len(split.classes))
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 1  # the second batch never runs

    trained = Trainer(TrainSettings(epochs=3, batch_size=8), stop=stop).fit(model, get_strategy("full"), split)
    assert trained.stopped and trained.history == []
    assert Clock(60, now=ticking()).left() == 59  # started at the first read; asking reads it again, one second later


def test_small_images_add_the_small_cnn_trained_from_scratch(shapes: Path, tmp_path: Path) -> None:
    """On images at most SMALL_IMAGES across, training the small CNN from scratch is a candidate beside transfer;
    on larger ones it is not (the same shapes, enlarged)."""
    source = graft.fit(shapes, backbone="smallcnn", strategy="scratch", epochs=1, out=tmp_path / "source", report=False)
    large = tmp_path / "large"
    for path in shapes.rglob("*.png"):
        (large / path.parent.name).mkdir(parents=True, exist_ok=True)
        Image.open(path).resize((96, 96)).save(large / path.parent.name / path.name)
    for data, expected in ((shapes, True), (large, False)):
        out = tmp_path / f"auto-{data.name}"
        graft.auto(data, "2m", backbones=str(source.path), out=out, now=ticking(), report=False)
        scratch = [r for r in rows(out) if (r["backbone"], r["strategy"]) == ("smallcnn", "scratch")]
        assert bool(scratch) == expected, rows(out)
        if expected:  # cheap on small images: it trained, and was judged on validation like the rest
            assert scratch[0]["val_accuracy"] is not None and scratch[0]["estimated_seconds"] > 0


def test_the_first_probe_takes_the_best_ranked_backbone_it_can_afford(shapes: Path) -> None:
    """The answer that must exist is made on the best-ranked backbone whose probe fits in half of the time
    left; where none does, on the cheapest (speeds as a measurement would leave them, in seconds an image)."""
    base = FitConfig.create(str(shapes))
    split = replace(make_split(load_data(base.data, base.classes, base.bad_images), seed=0), test=[])
    search = auto_module.Search(base, split, ["slow", "fast"], Clock(100.0, lambda: 0.0), lambda entries: None)
    search.dims = {"slow": 64, "fast": 64}
    search.speeds = {"slow": auto_module.Speed(2.0, 6.0), "fast": auto_module.Speed(0.01, 0.03)}  # ~100 s and ~4 s of probe
    assert search.insurance(["slow", "fast"]) == "fast"
    search.speeds["slow"] = auto_module.Speed(0.02, 0.06)
    assert search.insurance(["slow", "fast"]) == "slow"  # both fit: the ranking decides
    search.speeds = {"slow": auto_module.Speed(3.0, 9.0), "fast": auto_module.Speed(2.0, 6.0)}
    assert search.insurance(["slow", "fast"]) == "fast"  # neither fits: the cheaper


def test_the_winner_is_scored_on_a_stratified_sample_where_the_whole_test_part_does_not_fit(shapes: Path) -> None:
    """All test images where their pass fits the time left; else as many as fit, every class keeping its share,
    never fewer than the validation figures use (500 here)."""
    base = FitConfig.create(str(shapes))
    split = replace(make_split(load_data(base.data, base.classes, base.bad_images), seed=0), test=[])
    clock_now = {"t": 0.0}
    search = auto_module.Search(base, split, ["net"], Clock(600.0, lambda: clock_now["t"]), lambda entries: None)
    search.speeds = {"net": auto_module.Speed(0.05, 0.15)}  # 0.06 s an image with the margin
    search.best = auto_module.Best(auto_module.Entry("p", "net", "features", {}, 1, 0.0, 0.0, 0.0), base, None, None, 0.0)
    test = [(f"{c}/{i}.png", c) for c in range(3) for i in range(1000)]
    assert search.test_sample(test) == test  # 3,000 images: 180 s, 600 s left
    clock_now["t"] = 515.0  # 85 s left: 70 s for the pass after saving and the report, ~1,166 images
    sample = search.test_sample(test)
    assert 1100 <= len(sample) <= 1170 and set(sample) <= set(test)
    counts = [sum(y == c for _, y in sample) for c in range(3)]
    assert max(counts) - min(counts) <= 1
    clock_now["t"] = 700.0  # over budget already: the smallest sample that still says something
    assert len(search.test_sample(test)) == 500


def test_a_finetune_whose_frozen_blocks_run_once_is_estimated_as_the_trainer_runs_it(shapes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without augmentation the trainer runs a finetune's frozen blocks once per image and each epoch only the
    rest: auto measures that (the pass once, the rest's step), where parameter shares would overstate an
    EfficientNet's epoch several times over; where the outputs would not fit in memory, the trainer runs the
    whole backbone every epoch, and so does the estimate."""
    base = FitConfig.create(str(shapes))
    split = replace(make_split(load_data(base.data, base.classes, base.bad_images), seed=0), test=[])
    finetune, full = auto_module.Candidate("smallcnn", "finetune", {"unfreeze": 2}), auto_module.Candidate("smallcnn", "full")
    fed = {}
    for memory in ("64", "0"):
        monkeypatch.setenv("GRAFT_DECODE_CACHE_MB", memory)
        search = auto_module.Search(base, split, ["smallcnn"], Clock(100.0, ticking()), lambda entries: None)
        search.profile("smallcnn", create_backbone("smallcnn"), lambda _: [finetune, full])
        search.measure_fed("smallcnn", [finetune, full])  # what run() does for the backbone the halving trains
        fed[memory] = search.fed.get(("smallcnn", "finetune", repr(finetune.options)))
        assert ("smallcnn", "full", "{}") not in search.fed  # nothing frozen: the whole network every epoch
        if fed[memory] is not None:  # its one pass, then the rest's steps: the estimate grows by those steps an epoch
            once = (len(split.train) + len(split.val)) * fed[memory].once
            epoch = len(split.train) * fed[memory].speed.step + len(split.val) * fed[memory].speed.forward
            assert search.estimate(finetune, 3) - search.estimate(finetune, 1) == pytest.approx(2 * epoch)
            assert search.estimate(finetune, 1) >= once + epoch
    assert fed["64"] is not None and fed["0"] is None
