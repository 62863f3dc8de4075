"""graft's Python API: fit, evaluate and predict. The command line is a thin layer over these.

    >>> from graft import api
    >>> outcome = api.fit("digits", classes="7-9", backbone="runs/digits-0to6", strategy="frozen")  # doctest: +SKIP
    >>> outcome.test_accuracy  # doctest: +SKIP
    0.99
"""

import resource
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from graft.backbones import DEFAULT_BACKBONE, create_backbone
from graft.console import log
from graft.data.builtin import dataset_root
from graft.data.images import is_image_file
from graft.data.imageset import BAD_IMAGES, ImageSet
from graft.data.loader import make_loader
from graft.data.sources import load_image_set
from graft.data.split import SPLIT_FILE, Split, make_split
from graft.errors import GraftError, Interrupted
from graft.inference import forward_all, resolve
from graft.model import GraftModel
from graft.rundir import METRICS, RESULT, Run, load_run, save_run, write_json
from graft.strategies import get_strategy
from graft.train.checkpoint import CHECKPOINT, load_checkpoint
from graft.train.settings import TrainSettings
from graft.train.trainer import Trainer, seed_everything

EVAL_BATCH = 128


@dataclass
class FitOutcome:
    """What one fit produced: where it is, how well it does on the test split, and what it cost."""

    run_dir: str
    strategy: str
    test_accuracy: float
    test_loss: float
    train_seconds: float
    epochs: int
    trainable_params: int
    total_params: int
    peak_memory_mb: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_data(data: str, classes: str | None = None, bad_images: str = "skip") -> ImageSet:
    """A built-in data set name or an image folder, narrowed to ``classes`` (e.g. ``"7-9"``).

    Unreadable images and empty class folders are left out with a one-line warning (``bad_images="skip"``)
    or stop everything with an error naming the first one (``"fail"``).
    """
    images = load_image_set(dataset_root(data), classes, bad_images)
    if images.bad:
        path, reason = images.bad[0]
        more = f" and {len(images.bad) - 1} more" if len(images.bad) > 1 else ""
        log(f"[yellow]warning:[/] skipped {len(images.bad)} unreadable image(s): {escape(path)} ({escape(reason)}){more}")
    if images.empty_classes:
        log(f"[yellow]warning:[/] ignored class folder(s) without images: {escape(', '.join(images.empty_classes))}")
    return images


def prepare_out(out: Path | None, default: str, overwrite: bool = False) -> Path:
    """The run directory to write: never an existing run unless ``overwrite``, so no finished work is lost."""
    if out is None:
        out, n = Path("runs") / default, 2
        while out.exists():
            out, n = Path("runs") / f"{default}-{n}", n + 1
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise GraftError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux's ``VmHWM`` starts afresh in a newly executed process, which is what lets ``compare`` give each
    strategy its own figure; ``ru_maxrss`` would carry the parent's peak over into a spawned child.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit(
    data: str,
    *,
    classes: str | None = None,
    backbone: str = DEFAULT_BACKBONE,
    strategy: str = "frozen",
    out: Path | None = None,
    settings: TrainSettings | None = None,
    split: Split | None = None,
    strategy_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    weights: str | None = None,
    layer: int | None = None,
    resume: bool = False,
    bad_images: str = "skip",
    report: bool = True,
    tensorboard: bool = False,
) -> FitOutcome:
    """Graft a new head onto ``backbone``, train it with ``strategy`` and save the run to ``out``.

    ``split`` lets several fits share one split exactly (that is what ``compare`` does); otherwise a
    seeded stratified split of ``data`` is made and saved in the run directory. ``weights`` (a file, or
    ``"random"``) and ``layer`` (an earlier cut) go to :func:`graft.backbones.create_backbone`;
    ``strategy_options`` (e.g. ``{"unfreeze": 2}``) to the strategy. A checkpoint is written
    to ``out`` after every epoch; ``resume=True`` continues from it (with the same arguments) and ends
    with the same weights and metrics as a run that was never stopped. ``report`` writes
    ``report.html`` and ``tensorboard`` TensorBoard event files into the run once it is saved.
    """
    settings = settings or TrainSettings()
    resolve(settings.precision)  # an unknown precision is an error before any work, not after the data scan
    strat = get_strategy(strategy, **(strategy_options or {}))
    request = {
        "data": data,
        "classes": classes,
        "backbone": backbone,
        "weights": weights,
        "layer": layer,
        "strategy": strategy,
        "strategy_options": strategy_options or {},
        "settings": settings.to_dict(),
        "bad_images": bad_images,
    }
    state = _checkpoint_to_resume(out, request) if resume else None
    seed_everything(settings.seed)  # before the backbone: a randomly initialised one must be the same every time
    source = create_backbone(backbone, weights, layer)
    if state is None:
        images = None
        if split is None:
            images = load_data(data, classes, bad_images)
            split = make_split(images, seed=settings.seed, per_class=settings.per_class)
        out = prepare_out(out, f"{Path(data).name}-{strategy}", overwrite)
        split.save(out)
        if images is not None:
            write_json(out / BAD_IMAGES, {"policy": bad_images, "count": len(images.bad), "images": images.bad, "empty_classes": images.empty_classes})
    else:
        out = Path(out)  # type: ignore[arg-type]  # _checkpoint_to_resume refuses None
        split = Split.load(out / SPLIT_FILE)
    model = GraftModel(source, len(split.classes), settings.head)
    trainer = Trainer(settings, out / METRICS, log, checkpoint_path=out / CHECKPOINT, request=request)
    try:
        result = trainer.fit(model, strat, split, resume=state)
    except KeyboardInterrupt:
        if (out / CHECKPOINT).is_file():
            raise Interrupted(f"interrupted; every finished epoch is saved in {out / CHECKPOINT}; continue with: graft resume {out}") from None
        raise Interrupted("interrupted before the first epoch finished; nothing to resume, run the command again") from None
    config = {
        "classes": split.classes,
        "backbone": model.backbone.spec,
        "head": model.head_spec,
        "preprocessing": model.backbone.preprocessing.to_dict(),
        "strategy": {"name": strat.name, "options": strat.options()},
        "settings": settings.to_dict(),
        "data": {"source": data, "classes": classes},
    }
    save_run(out, model, config)
    logits, labels = _logits(model, split.root, split.test, settings.precision)
    outcome = FitOutcome(
        run_dir=str(out),
        strategy=strat.name,
        test_accuracy=_accuracy(logits, labels),
        test_loss=torch.nn.functional.cross_entropy(logits, labels).item(),
        train_seconds=round(result.train_seconds, 3),
        epochs=result.epochs,
        trainable_params=result.trainable_params,
        total_params=sum(p.numel() for p in model.parameters()),
        peak_memory_mb=round(peak_memory_mb(), 1),
    )
    write_json(out / RESULT, outcome.to_dict())
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: result.json and the model replace it
    from graft.report import after_run  # the report reads the saved run; imported late to keep api light

    after_run(out, report=report, tensorboard=tensorboard)
    return outcome


def _checkpoint_to_resume(out: Path | None, request: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint in ``out`` if it was made by the same arguments; None where there is nothing yet."""
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
    saved = state.get("request")
    if not isinstance(saved, dict):
        raise GraftError(f"{out / CHECKPOINT} does not record the arguments that started the run; start it again with --overwrite")
    for key, value in request.items():
        if saved.get(key) != value:
            raise GraftError(
                f"{out} was started with {key} {saved.get(key)!r}, not {value!r}; give the same options, or run: graft resume {out}"
            )
    return state


def resume(run_dir: Path) -> FitOutcome:
    """Continue an interrupted run from its checkpoint, with the arguments that started it."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    if not path.is_file() and (run_dir / RESULT).is_file():
        raise GraftError(f"{run_dir} has finished already ({RESULT} is there); nothing to resume")
    request = load_checkpoint(path).get("request")
    try:
        args = {key: request[key] for key in ("data", "classes", "backbone", "weights", "layer", "strategy", "strategy_options", "bad_images")}
        settings = TrainSettings.from_dict(request["settings"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise GraftError(f"{path} records no usable arguments ({exc}); start the run again") from exc
    return fit(**args, settings=settings, out=run_dir, resume=True)


def _logits(model: GraftModel, root: str | Path, samples: list[tuple[str, int]], precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    loader = make_loader(Path(root), samples, model.backbone.preprocessing, batch_size=EVAL_BATCH)
    return forward_all(model, loader, precision)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def _matching_samples(run: Run, images: ImageSet) -> list[tuple[str, int]]:
    """``images``' samples relabelled to the run's class order; an error if the class sets differ."""
    if set(images.classes) != set(run.classes):
        raise GraftError(
            f"run {run.path} was trained on classes {', '.join(run.classes)} but the data has {', '.join(images.classes)}; "
            "select the same classes with --classes or evaluate a run trained on these"
        )
    order = {name: i for i, name in enumerate(run.classes)}
    return [(path, order[images.classes[label]]) for path, label in images.samples]


def evaluate(
    run_dir: Path, data: str, classes: str | None = None, part: str = "auto", per_image: bool = False, precision: str = "auto"
) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall and the confusion matrix of a saved run on ``data``.

    ``part="auto"`` evaluates on the run's own test split when ``data`` is the data set it was trained on
    (all of it would include training images), and on every image otherwise. ``per_image`` adds each
    image's true and predicted class (what the report's gallery of confident mistakes is made from).
    """
    run = load_run(run_dir)
    if part not in ("auto", "test", "all"):
        raise GraftError(f"unknown part '{part}'; choose auto, test or all")
    images = load_data(data, classes)
    samples = _matching_samples(run, images)
    split_file = Path(run_dir) / SPLIT_FILE
    if part != "all" and split_file.is_file():
        split = Split.load(split_file)
        if Path(split.root).resolve() == images.root.resolve():
            return _score(run, split.root, _test_samples(run, split), "test", per_image, precision)
    if part == "test":
        raise GraftError(f"run {run_dir} has no test split for {data}; use --part all")
    return _score(run, images.root, samples, "all", per_image, precision)


def evaluate_test_split(run_dir: Path, per_image: bool = False, precision: str = "auto") -> dict[str, Any]:
    """:func:`evaluate` on the run's own test split, read from its ``split.json``.

    The report takes this path: the data set is not scanned again (a scan decodes every image to find the
    unreadable ones, and would print the fit's warnings a second time).
    """
    run = load_run(run_dir)
    split = Split.load(Path(run_dir) / SPLIT_FILE)
    return _score(run, split.root, _test_samples(run, split), "test", per_image, precision)


def _test_samples(run: Run, split: Split) -> list[tuple[str, int]]:
    """The split's test images, labelled in the run's class order."""
    return [(p, run.classes.index(split.classes[y])) for p, y in split.test]


def _score(run: Run, root: str | Path, samples: list[tuple[str, int]], part: str, per_image: bool, precision: str) -> dict[str, Any]:
    """Accuracy, loss, per-class figures and the confusion matrix of ``run`` on ``samples`` under ``root``."""
    root = Path(root)
    logits, labels = _logits(run.model, root, samples, precision)
    predicted = logits.argmax(1).numpy()
    precisions, recalls, _, support = precision_recall_fscore_support(labels.numpy(), predicted, labels=range(len(run.classes)), zero_division=0)
    result = {
        "run_dir": str(run.path),
        "part": part,
        "images": len(samples),
        "accuracy": _accuracy(logits, labels),
        "loss": torch.nn.functional.cross_entropy(logits, labels).item(),
        "classes": run.classes,
        "per_class": [
            {"class": c, "precision": float(p), "recall": float(r), "support": int(n)}
            for c, p, r, n in zip(run.classes, precisions, recalls, support, strict=True)
        ],
        "confusion_matrix": confusion_matrix(labels.numpy(), predicted, labels=range(len(run.classes))).tolist(),
    }
    if per_image:
        confidence = logits.softmax(1).max(1).values
        result["per_image"] = [
            {"path": str(root / path), "true": run.classes[y], "predicted": run.classes[p], "probability": round(float(c), 6)}
            for (path, y), p, c in zip(samples, predicted, confidence, strict=True)
        ]
    return result


def image_files(paths: list[Path]) -> list[Path]:
    """Expand files and folders (recursively) into image files, in a stable order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)))
        elif path.is_file():
            found.append(path)
        else:
            raise GraftError(f"{path} does not exist; give image files or folders of images")
    if not found:
        raise GraftError(f"no images found in {', '.join(map(str, paths))}")
    return found


def predict(
    run_dir: Path, paths: list[Path], top_k: int = 3, threshold: float | None = None, precision: str = "auto"
) -> list[dict[str, Any]]:
    """Top-``k`` labels with probabilities for each image under ``paths``.

    With ``threshold``, each row says whether its top probability falls below it (``low_confidence``),
    so the images a person should look at can be filtered out of a large batch.
    """
    run = load_run(run_dir)
    files = image_files(paths)
    logits, _ = _logits(run.model, Path("/"), [(str(p.resolve()), 0) for p in files], precision)
    probabilities = logits.softmax(1)
    k = min(top_k, len(run.classes))
    top = probabilities.topk(k, dim=1)
    rows = [
        {
            "path": str(path),
            "label": run.classes[int(idx[0])],
            "probability": round(float(prob[0]), 6),
            "top": [{"label": run.classes[int(i)], "probability": round(float(p), 6)} for p, i in zip(prob, idx, strict=True)],
        }
        for path, prob, idx in zip(files, top.values, top.indices, strict=True)
    ]
    if threshold is not None:
        for row in rows:
            row["low_confidence"] = row["probability"] < threshold
    return rows
