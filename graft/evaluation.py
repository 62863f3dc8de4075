"""A saved run at work: its figures on a data set (:func:`evaluate`) and its labels for new images (:func:`predict`).

Both feed images through the preprocessing saved in the run's ``config.json``, the same that ``graft
export`` writes into ``preprocessing.json``: a run predicts the same way wherever it is used. Both take a
``device`` (:mod:`graft.device`): the run's weights load onto the CPU and move there, whichever device trained them.
Both predict with the run's test-time augmentation (:mod:`graft.tta`) unless ``tta`` overrides it.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from sklearn.metrics import confusion_matrix

from graft import distributed
from graft.data.dataset import load_data
from graft.data.images import is_image_file
from graft.data.imageset import ImageSet
from graft.data.loader import make_loader
from graft.data.split import SPLIT_FILE, Split
from graft.data.transforms import Preprocessing
from graft.device import module_device, pin_memory, resolve_device
from graft.errors import GraftError
from graft.inference import forward_all, resolve
from graft.metrics import ClassScores, Scores, classification_report
from graft.rundir import SavedRun, load_run
from graft.tta import TTAS, with_tta

EVAL_BATCH = 128
PARTS = ("auto", "test", "all")


def logits_of(
    model: torch.nn.Module,
    root: str | Path,
    samples: list[tuple[str, int]],
    preprocessing: Preprocessing,
    precision: str = "auto",
    tta: str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, labels)`` of ``samples`` (paths relative to ``root``) through ``model`` on its device, in order, on the CPU;
    under ``tta="flip"`` the logits are log-probabilities averaged with each image's mirror (:mod:`graft.tta`)."""
    loader = make_loader(Path(root), samples, preprocessing, batch_size=EVAL_BATCH, pin_memory=pin_memory(module_device(model)))
    return forward_all(with_tta(model, tta), loader, precision)


def headline(scores: Scores) -> float:
    """The figure to rank by: balanced accuracy where the classes are uneven (accuracy would reward favouring the large ones), else accuracy."""
    return scores.balanced_accuracy if scores.imbalanced else scores.accuracy


def choose_tta(
    model: torch.nn.Module, root: str | Path, samples: list[tuple[str, int]], preprocessing: Preprocessing, precision: str = "auto"
) -> tuple[str, dict[str, float]]:
    """``flip`` where averaging with the mirror image scores higher than the image alone on ``samples`` (the
    validation part), else ``none``; with each one's score (:func:`headline`). A tie keeps ``none``: half the cost."""
    found = {}
    for tta in TTAS:
        logits, labels = logits_of(model, root, samples, preprocessing, precision, tta)
        found[tta] = headline(classification_report(labels.numpy(), logits.argmax(1).numpy(), [str(i) for i in range(logits.shape[1])]))
    return ("flip" if found["flip"] > found["none"] else "none"), found


def _tta(run: SavedRun, tta: str | None) -> str:
    """``tta`` if given (checked), else the run's own choice."""
    if tta is None:
        return run.tta
    if tta not in TTAS:
        raise GraftError(f"unknown --tta '{tta}'; choose {', '.join(TTAS)} (default: the run's own, {run.tta})")
    return tta


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


@dataclass
class Evaluation:
    """A run's figures on a set of images: accuracy, loss, per-class precision/recall, the confusion matrix.

    ``per_image`` (when asked for) lists each image's path, true and predicted class and confidence: what
    the report's gallery of confident mistakes is made from.
    """

    run_dir: str
    part: str  # "test": the run's own test split; "all": every image of the data given
    loss: float
    classes: list[str]
    scores: Scores  # accuracy and balanced accuracy with 95% intervals, macro F1, per-class figures
    confusion_matrix: list[list[int]]
    tta: str = "none"  # the test-time augmentation the figures were computed with (graft.tta)
    per_image: list[dict[str, Any]] | None = field(default=None)

    @property
    def accuracy(self) -> float:
        return self.scores.accuracy

    @property
    def images(self) -> int:
        return self.scores.images

    @property
    def per_class(self) -> list[ClassScores]:
        return self.scores.per_class

    def to_dict(self) -> dict[str, Any]:
        """Flat: the scores' figures beside the rest (``accuracy``, ``balanced_accuracy``, ``per_class``...)."""
        result = {**asdict(self), **self.scores.to_dict()}
        del result["scores"]
        if self.per_image is None:
            del result["per_image"]
        return result


@dataclass
class Prediction:
    """One image's top labels, most probable first; ``low_confidence`` only when a threshold was given."""

    path: str
    label: str
    probability: float
    top: list[dict[str, Any]]  # [{"label", "probability"}, ...], k of them
    low_confidence: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        if self.low_confidence is None:
            del row["low_confidence"]
        return row


def score(
    run: SavedRun,
    root: str | Path,
    samples: list[tuple[str, int]],
    part: str,
    per_image: bool = False,
    precision: str = "auto",
    tta: str = "none",
) -> Evaluation:
    """The :class:`Evaluation` of ``run`` on ``samples`` under ``root`` (labels in the run's class order)."""
    root = Path(root)
    # under torch.distributed every image once: each rank its unpadded share, gathered in order
    logits, labels = distributed.gather_rows(*logits_of(run.model, root, distributed.shard(samples), run.preprocessing, precision, tta))
    predicted = logits.argmax(1).numpy()
    images = None
    if per_image:
        confidence = logits.softmax(1).max(1).values
        images = [
            {"path": str(root / path), "true": run.classes[y], "predicted": run.classes[p], "probability": round(float(c), 6)}
            for (path, y), p, c in zip(samples, predicted, confidence, strict=True)
        ]
    return Evaluation(
        run_dir=str(run.path),
        part=part,
        loss=torch.nn.functional.cross_entropy(logits, labels).item(),
        classes=run.classes,
        scores=classification_report(labels.numpy(), predicted, run.classes),
        confusion_matrix=confusion_matrix(labels.numpy(), predicted, labels=range(len(run.classes))).tolist(),
        per_image=images,
        tta=tta,
    )


def _load(run_dir: Path, precision: str, device: str) -> SavedRun:
    """The run in ``run_dir`` on ``device``, once ``precision`` is known to run there."""
    target = resolve_device(device)
    resolve(precision, target)
    run = load_run(run_dir)
    run.model.to(target)
    return run


def _matching_samples(run: SavedRun, images: ImageSet) -> list[tuple[str, int]]:
    """``images``' samples relabelled to the run's class order; an error if the class sets differ."""
    if set(images.classes) != set(run.classes):
        raise GraftError(
            f"run {run.path} was trained on classes {', '.join(run.classes)} but the data has {', '.join(images.classes)}; "
            "select the same classes with --classes or evaluate a run trained on these"
        )
    order = {name: i for i, name in enumerate(run.classes)}
    return [(path, order[images.classes[label]]) for path, label in images.samples]


def _test_samples(run: SavedRun, split: Split) -> list[tuple[str, int]]:
    """The split's test images, labelled in the run's class order."""
    return [(p, run.classes.index(split.classes[y])) for p, y in split.test]


def evaluate(
    run_dir: Path,
    data: str,
    classes: str | None = None,
    part: str = "auto",
    per_image: bool = False,
    precision: str = "auto",
    device: str = "auto",
    tta: str | None = None,
) -> Evaluation:
    """The figures of a saved run on ``data``.

    ``part="auto"`` evaluates on the run's own test split when ``data`` is the data set it was trained on
    (all of it would include training images), and on every image otherwise. ``tta`` (``none`` or ``flip``)
    overrides the run's own test-time augmentation.
    """
    if part not in PARTS:
        raise GraftError(f"unknown part '{part}'; choose {', '.join(PARTS)}")
    run = _load(run_dir, precision, device)  # an unknown precision or device is an error before the data scan, not after it
    tta = _tta(run, tta)
    images = load_data(data, classes)
    samples = _matching_samples(run, images)
    split_file = Path(run_dir) / SPLIT_FILE
    if part != "all" and split_file.is_file():
        split = Split.load(split_file)
        if Path(split.root).resolve() == images.root.resolve():
            return score(run, split.root, _test_samples(run, split), "test", per_image, precision, tta)
    if part == "test":
        raise GraftError(f"run {run_dir} has no test split for {data}; use --part all")
    return score(run, images.root, samples, "all", per_image, precision, tta)


def evaluate_test_split(
    run_dir: Path, per_image: bool = False, precision: str = "auto", device: str = "auto", tta: str | None = None
) -> Evaluation:
    """:func:`evaluate` on the run's own test split, read from its ``split.json`` (no scan of the data set)."""
    run = _load(run_dir, precision, device)
    split = Split.load(Path(run_dir) / SPLIT_FILE)
    return score(run, split.root, _test_samples(run, split), "test", per_image, precision, _tta(run, tta))


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
    run_dir: Path,
    paths: list[Path],
    top_k: int = 3,
    threshold: float | None = None,
    precision: str = "auto",
    device: str = "auto",
    tta: str | None = None,
) -> list[Prediction]:
    """Top-``top_k`` labels with probabilities for each image under ``paths``.

    With ``threshold``, each prediction says whether its top probability falls below it
    (``low_confidence``), so the images a person should look at can be picked out of a large batch.
    ``tta`` (``none`` or ``flip``) overrides the run's own test-time augmentation.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise GraftError(f"--top-k {top_k} is out of range; list at least 1 label per image")
    if threshold is not None and not 0 <= threshold <= 1:
        raise GraftError(f"--threshold {threshold} is not a probability; give a value between 0 and 1")
    run = _load(run_dir, precision, device)
    tta = _tta(run, tta)
    files = image_files(paths)
    logits, _ = logits_of(run.model, Path("/"), [(str(p.resolve()), 0) for p in files], run.preprocessing, precision, tta)
    top = logits.softmax(1).topk(min(top_k, len(run.classes)), dim=1)
    predictions = []
    for path, probs, indices in zip(files, top.values, top.indices, strict=True):
        ranked = [{"label": run.classes[int(i)], "probability": round(float(p), 6)} for p, i in zip(probs, indices, strict=True)]
        low = None if threshold is None else ranked[0]["probability"] < threshold
        predictions.append(Prediction(str(path), ranked[0]["label"], ranked[0]["probability"], ranked, low))
    return predictions
