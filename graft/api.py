"""graft's Python face: :func:`fit` a run, :func:`load` a saved one, :func:`resume` an interrupted one.

Each returns a :class:`Run`: the run directory as an object, with its figures, its history and the
verbs that use it (``predict``, ``evaluate``, ``export``, ``report``). The command line is a thin layer
over these functions; every check it makes happens here (in :class:`graft.config.FitConfig`).

    >>> import graft
    >>> run = graft.fit("digits", classes="7-9", backbone="smallcnn", epochs=2)  # doctest: +SKIP
    >>> run.test_accuracy, run.path  # doctest: +SKIP
    (0.99, PosixPath('runs/digits-frozen'))
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from graft import distributed
from graft.atomic import write_json
from graft.config import FitConfig
from graft.console import log
from graft.data.dataset import load_data
from graft.data.imageset import BAD_IMAGES
from graft.data.split import SPLIT_FILE, Split, make_split
from graft.device import parse_device
from graft.errors import DiskFull, GraftError, Interrupted
from graft.evaluation import Evaluation, Prediction, choose_tta, evaluate, predict, score
from graft.memory import peak_memory_mb
from graft.model import GraftModel
from graft.outdir import prepare_out
from graft.report import after_run, write_report
from graft.report.metrics import read_metrics
from graft.results import RunResult
from graft.rundir import METRICS, RESULT, SavedRun, load_run, read_config, save_run
from graft.sources import create_backbone
from graft.train.checkpoint import CHECKPOINT, load_checkpoint
from graft.train.trainer import Trainer, TrainResult, seed_everything


@dataclass
class Run:
    """A run directory as an object: what was fitted (``config``), how it did (``result``), and its verbs.

    The model loads on first use (``run.model``), so looking at the figures of many runs stays cheap.
    """

    path: Path
    config: FitConfig
    result: RunResult

    @property
    def test_accuracy(self) -> float:
        return self.result.test_accuracy

    @property
    def classes(self) -> list[str]:
        return list(read_config(self.path)["classes"])  # without loading the weights

    @property
    def tta(self) -> str:
        """The test-time augmentation the run predicts with (``none`` or ``flip``; what ``auto`` chose)."""
        return str(read_config(self.path).get("tta", "none"))

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per epoch (losses, accuracies, seconds), as ``metrics.jsonl`` holds them."""
        return read_metrics(self.path)

    @cached_property
    def saved(self) -> SavedRun:
        return load_run(self.path)

    @property
    def model(self) -> GraftModel:
        return self.saved.model

    def predict(
        self,
        paths: list[str | Path] | str | Path,
        top_k: int = 3,
        threshold: float | None = None,
        precision: str = "auto",
        device: str = "auto",
        tta: str | None = None,
    ) -> list[Prediction]:
        """The top ``top_k`` labels of each image (files, or folders searched recursively), computed on ``device``;
        ``tta`` (none or flip) overrides the run's own test-time augmentation."""
        files = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
        return predict(self.path, files, top_k, threshold, precision, device, tta)

    def evaluate(
        self,
        data: str | None = None,
        classes: str | None = None,
        part: str = "auto",
        per_image: bool = False,
        precision: str = "auto",
        device: str = "auto",
        tta: str | None = None,
    ) -> Evaluation:
        """Figures on ``data`` (default: the data set the run was fitted on, i.e. its own test split), computed on ``device``;
        ``tta`` (none or flip) overrides the run's own test-time augmentation."""
        data, classes = (data, classes) if data is not None else (self.config.data, self.config.classes)
        return evaluate(self.path, data, classes, part, per_image, precision, device, tta)

    def export(self, fmt: str = "onnx", out: Path | None = None) -> dict[str, str]:
        """The model as ONNX or TorchScript with ``preprocessing.json``, to use without graft; the paths written."""
        from graft.export import export  # onnx and its exporter load only when a model is exported

        return export(self.path, fmt, out)

    def report(self) -> Path:
        """Write ``report.html`` into the run directory; its path."""
        return write_report(self.path)

    def to_dict(self) -> dict[str, Any]:
        return self.result.to_dict()


def load(path: str | Path) -> Run:
    """A finished run directory (made by :func:`fit`, ``graft fit`` or ``graft pretrain``) as a :class:`Run`."""
    path = Path(path)
    raw = read_config(path)
    if not (path / RESULT).is_file():
        hint = f"continue it with graft resume {path}" if (path / CHECKPOINT).is_file() else "train it again"
        raise GraftError(f"{path} has no {RESULT}: the run did not finish; {hint}")
    try:
        result = RunResult.from_dict(read_json(path / RESULT))
    except (KeyError, TypeError) as exc:
        raise GraftError(f"{path / RESULT} is damaged ({exc}); train the run again") from exc
    return Run(path, _saved_config(raw.get("fit")), result)


def _saved_config(raw: Any, device: str | None = None) -> FitConfig:
    """A saved run description (``config.json``'s ``fit``, a checkpoint's ``config``), checked as any other
    except against this machine's devices; ``device`` replaces the saved one (``graft resume --device``).

    The device is where a run trained, not what it is: a run made on a GPU loads, and continues, on a
    machine without one. Its saved device is checked for form; :func:`fit` checks the one it trains on.
    """
    settings = raw.get("settings") if isinstance(raw, dict) else None
    if not isinstance(settings, dict):
        return FitConfig.from_dict(raw)  # which says what is wrong with it
    chosen = settings.get("device", "auto") if device is None else device
    parse_device(chosen)
    config = FitConfig.from_dict({**raw, "settings": {**settings, "device": "cpu"}})  # the CPU: every machine has one
    return replace(config, settings=replace(config.settings, device=chosen))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GraftError(f"cannot read {path}: {exc}") from exc


def fit(
    data: str | Path | FitConfig,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    report: bool = True,
    tensorboard: bool = False,
    split: Split | None = None,
    **options: Any,
) -> Run:
    """Graft a new head onto a backbone, train it and save the run; the :class:`Run`.

    ``data`` is an image folder, a CSV of ``path,label`` rows, a built-in data set name, or a whole
    :class:`FitConfig`; ``options`` are the config's (``classes``, ``backbone``, ``strategy``,
    ``epochs``, ``unfreeze``... see :meth:`FitConfig.create`). The run goes to ``out`` (default
    ``runs/DATA-STRATEGY``); ``overwrite`` replaces an earlier graft run there (never other files);
    ``resume`` continues the checkpoint in ``out`` if there is one. ``split`` makes several fits share
    one split exactly (what ``compare`` does). ``report`` writes ``report.html``, ``tensorboard`` event files.
    """
    if isinstance(data, FitConfig):
        if options:
            raise GraftError(f"give options either in the FitConfig or as keywords, not both ({', '.join(options)})")
        config = data.validate()
    else:
        config = FitConfig.create(str(data), **options)
    with distributed.process_group(config.settings.device):  # started by torchrun (or graft fit --nproc N): join its group
        # rank 0 reads and writes the run directory (other machines may not have it); every rank learns what it found
        state = distributed.on_main(lambda: _checkpoint_to_resume(out, config)) if resume else None
        seed_everything(config.settings.seed)  # before the backbone: a randomly initialised one must be the same every time
        source = create_backbone(config.backbone, config.weights, config.layer)
        split, out = distributed.on_main(lambda: _prepare_run(config, out, overwrite, split, resumed=state is not None))
        return _train_in(config, source, split, out, state, report, tensorboard)


def _prepare_run(config: FitConfig, out: str | Path | None, overwrite: bool, split: Split | None, resumed: bool) -> tuple[Split, Path]:
    """The split and the run directory: made (data read, split drawn and saved), or a resumed run's own."""
    if resumed:
        out = Path(out)  # type: ignore[arg-type]  # _checkpoint_to_resume refuses None
        return Split.load(out / SPLIT_FILE), out
    images = None
    if split is None:
        images = load_data(config.data, config.classes, config.bad_images)
        split = make_split(images, seed=config.settings.seed, per_class=config.settings.per_class)
    out = prepare_out(Path(out) if out is not None else None, config.name(), overwrite)
    split.save(out)
    if images is not None:
        write_json(
            out / BAD_IMAGES,
            {"policy": config.bad_images, "count": len(images.bad), "images": images.bad, "empty_classes": images.empty_classes},
        )
    return split, out


def _train_in(
    config: FitConfig, source: Any, split: Split, out: Path, state: dict[str, Any] | None, report: bool, tensorboard: bool
) -> Run:
    """:func:`_train_and_save`, with Ctrl-C and a full disk turned into one line that says how to go on."""
    try:
        return _train_and_save(config, source, split, out, state, report, tensorboard)
    except KeyboardInterrupt:
        if (out / CHECKPOINT).is_file():
            raise Interrupted(
                f"interrupted; every finished epoch is saved in {out / CHECKPOINT}; continue with: graft resume {out}"
            ) from None
        raise Interrupted("interrupted before the first epoch finished; nothing to resume, run the command again") from None
    except DiskFull as exc:
        hint = (
            f"free some space, then continue with: graft resume {out}"
            if (out / CHECKPOINT).is_file()
            else "free some space and run the command again"
        )
        raise DiskFull(f"{exc}; {hint}") from exc


def _train_and_save(
    config: FitConfig, source: Any, split: Split, out: Path, state: dict[str, Any] | None, report: bool, tensorboard: bool
) -> Run:
    """Train on ``split``, save the model and its result into ``out``, then the report."""
    settings, strategy = config.settings, config.build_strategy()
    model = GraftModel(source, len(split.classes), settings.head)
    main = distributed.is_main()  # only rank 0 writes the run directory
    trainer = Trainer(
        settings, out / METRICS if main else None, log, checkpoint_path=out / CHECKPOINT if main else None, config=config.to_dict()
    )
    trained = trainer.fit(model, strategy, split, resume=state)
    return finish_run(config, model, trained, split, out, report=report, tensorboard=tensorboard)


def finish_run(
    config: FitConfig,
    model: GraftModel,
    trained: TrainResult,
    split: Split,
    out: Path,
    *,
    report: bool = True,
    tensorboard: bool = False,
    before_report: Callable[[Run], None] | None = None,
) -> Run:
    """Save a trained ``model`` into ``out`` as a finished run: weights, description, figures on ``split``'s test
    part, then (after ``before_report``) the report. The test images are read once, here: the report is made
    from the same pass. ``graft auto`` finishes its winner through this too."""
    settings, strategy = config.settings, config.build_strategy()
    main = distributed.is_main()  # only rank 0 writes the run directory
    tta = _resolve_tta(config, model, split)
    description = {
        "fit": config.to_dict(),
        "classes": split.classes,
        "backbone": model.backbone.spec,
        "head": model.head_spec,
        "preprocessing": model.backbone.preprocessing.to_dict(),
        "tta": tta,  # what the run predicts with: config.tta, or what auto chose
    }
    if main:
        save_run(out, model, description)
    evaluation = score(
        SavedRun(out, description, model), split.root, split.test, "test", per_image=report, precision=settings.precision, tta=tta
    )
    scores = evaluation.scores
    result = RunResult(
        run_dir=str(out),
        strategy=strategy.name,
        test_accuracy=scores.accuracy,
        test_accuracy_interval=[round(scores.accuracy_interval.low, 6), round(scores.accuracy_interval.high, 6)],
        balanced_accuracy=scores.balanced_accuracy,
        macro_f1=scores.macro_f1,
        per_class_recall={c.name: c.recall for c in scores.per_class},
        test_loss=evaluation.loss,
        train_seconds=round(trained.train_seconds, 3),
        epochs=trained.epochs,
        trainable_params=trained.trainable_params,
        total_params=sum(p.numel() for p in model.parameters()),
        peak_memory_mb=round(peak_memory_mb(), 1),
        uneven_classes=scores.imbalanced,
        tta=tta,
        logit_adjustment=trained.logit_adjustment,
    )
    run = Run(out, config, result)
    if main:
        write_json(out / RESULT, result.to_dict())
        (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: result.json and the model replace it
        if before_report is not None:
            before_report(run)
        after_run(out, report=report, tensorboard=tensorboard, evaluation=evaluation)
    distributed.barrier()  # every rank returns a finished run
    return run


def _resolve_tta(config: FitConfig, model: GraftModel, split: Split) -> str:
    """The run's test-time augmentation: the one asked for, or under ``auto`` the one that scores higher on the
    validation part (never the test part: that would choose on the figure it reports), said in one line."""
    if config.tta != "auto":
        return config.tta
    chosen, found = choose_tta(model, split.root, split.val, model.backbone.preprocessing, config.settings.precision)
    log(f"test-time augmentation: {chosen} (validation: {found['none']:.2%} alone, {found['flip']:.2%} averaged with the mirror image)")
    return chosen


def _checkpoint_to_resume(out: str | Path | None, config: FitConfig) -> dict[str, Any] | None:
    """The checkpoint in ``out`` if the same config made it; None where there is nothing yet."""
    if out is None:
        raise GraftError("--resume needs --out: the run directory to continue")
    out = Path(out)
    if not (out / CHECKPOINT).is_file():
        if (out / RESULT).is_file():
            raise GraftError(f"{out} has finished already ({RESULT} is there); nothing to resume")
        if out.exists() and any(out.iterdir()):
            raise GraftError(f"{out} has no {CHECKPOINT}: the run stopped before its first epoch ended; start it again with --overwrite")
        log(f"nothing to resume in {out} yet; starting the run")
        return None
    state = load_checkpoint(out / CHECKPOINT)
    saved = _saved_config(state.get("config"), device=config.settings.device).to_dict()  # a run may continue on another device
    for key, value in config.to_dict().items():
        if saved.get(key) != value:
            raise GraftError(
                f"{out} was started with {key} {saved.get(key)!r}, not {value!r}; give the same options, or run: graft resume {out}"
            )
    return state


def resume(run_dir: str | Path, device: str | None = None) -> Run:
    """Continue an interrupted run from its checkpoint, with the config that started it, on ``device`` if
    given (default: the one it started on; a run begun on a GPU continues with ``device="cpu"`` where there is none)."""
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT).is_file() and (run_dir / RESULT).is_file():
        raise GraftError(f"{run_dir} has finished already ({RESULT} is there); nothing to resume")
    # every process reads the run description: across machines, the run directory must be on a shared folder
    config = _saved_config(load_checkpoint(run_dir / CHECKPOINT).get("config"), device)
    return fit(config, out=run_dir, resume=True)
