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
strengths are within float noise on validation) and should be faster. Strengths are chosen by validation
log loss, the solver's criterion; scikit-learn fits each strength from scratch over the whole grid, as a
script would. Seconds are each head's fitting and selection only, on features already in memory, with
the thread count the command line gives (OMP_NUM_THREADS). Test figures come with 95% intervals.

    GRAFT_HOME=/tmp/graft-home-recipe OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/solver.py [--cases a,b] [--output FILE]
"""

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graft.backbones import DEFAULT_BACKBONE, create_backbone
from graft.data.builtin import dataset_root
from graft.data.folder import load_image_set
from graft.data.split import make_split
from graft.features import cached_features
from graft.metrics import classification_report
from graft.train.loop import evaluate_logits, train_epoch
from graft.train.settings import TrainSettings
from graft.train.solver import GRID, copy_into, fit_linear_head

# case -> (built-in data set, classes, training images a class)
CASES: dict[str, tuple[str, str | None, int]] = {
    "fashion-5to9-100": ("fashion", "5-9", 100),
    "devanagari-100": ("devanagari", None, 100),
    "devanagari-30": ("devanagari", None, 30),
    "photos": ("photos", None, 100),  # 40 crops a photo: the cap keeps all 28 training images a class
}
Features = dict[str, tuple[torch.Tensor, torch.Tensor]]


def case_features(backbone: Any, data: str, classes: str | None, per_class: int) -> tuple[Features, list[str]]:
    """Train/val/test features and labels of graft's split (seed 0), through graft's feature cache."""
    images = load_image_set(dataset_root(data), classes)
    split = make_split(images, seed=0, per_class=per_class)
    parts = {part: cached_features(backbone, images.root, getattr(split, part)) for part in ("train", "val", "test")}
    return parts, images.classes


def adamw_head(parts: Features, classes: int) -> tuple[nn.Linear, dict[str, Any]]:
    """graft's frozen strategy on cached features, with its default settings and inner training loop."""
    s = TrainSettings()
    torch.manual_seed(s.seed)
    head = nn.Linear(parts["train"][0].shape[1], classes)
    train = DataLoader(
        TensorDataset(*parts["train"]), batch_size=s.batch_size, shuffle=True, generator=torch.Generator().manual_seed(s.seed)
    )
    optimizer = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=s.lr, total_steps=max(s.epochs * len(train), 20), pct_start=0.1)
    loss_fn, best, stale, epochs = nn.CrossEntropyLoss(), (float("inf"), None), 0, 0
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


def solver_head(parts: Features, classes: int) -> tuple[nn.Linear, dict[str, Any]]:
    solved = fit_linear_head(*parts["train"], *parts["val"], classes)
    return copy_into(solved, nn.Linear(solved.weight.shape[1], classes)), solved.summary()


def sklearn_default(parts: Features, classes: int) -> tuple[Any, dict[str, Any]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = LogisticRegression().fit(parts["train"][0].numpy(), parts["train"][1].numpy())
    return model, {"converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught), "iterations": int(model.n_iter_.max())}


def sklearn_chosen(standardize: bool) -> Callable[[Features, int], tuple[Any, dict[str, Any]]]:
    """scikit-learn with C chosen on the validation part by log loss, over the solver's grid."""

    def fit(parts: Features, classes: int) -> tuple[Any, dict[str, Any]]:
        (x, y), (val_x, val_y) = ((a.numpy(), b.numpy()) for a, b in (parts["train"], parts["val"]))
        grid, best = [], None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            for C in GRID:
                model = make_pipeline(*([StandardScaler()] if standardize else []), LogisticRegression(C=C, max_iter=1000)).fit(x, y)
                loss = log_loss(val_y, model.predict_proba(val_x), labels=range(classes))
                grid.append({"C": C, "val_loss": loss, "iterations": int(model[-1].n_iter_.max())})
                if best is None or loss < best[0]:
                    best = (loss, C, model)
        return best[2], {"C": best[1], "converged": not caught, "grid": grid}

    return fit


METHODS: dict[str, Callable[[Features, int], tuple[Any, dict[str, Any]]]] = {
    "adamw": adamw_head,
    "solver": solver_head,
    "sklearn": sklearn_default,
    "sklearn-C": sklearn_chosen(standardize=False),
    "sklearn-std-C": sklearn_chosen(standardize=True),
}


def predict(model: Any, x: torch.Tensor) -> np.ndarray:
    if isinstance(model, nn.Module):
        with torch.no_grad():
            return model(x).argmax(1).numpy()
    return model.predict(x.numpy())


def run_case(name: str, backbone: Any) -> dict[str, Any]:
    data, classes, per_class = CASES[name]
    tick = time.perf_counter()
    parts, class_names = case_features(backbone, data, classes, per_class)
    sizes = {part: len(y) for part, (_, y) in parts.items()}
    print(f"== {name}: {sizes} images, features in {time.perf_counter() - tick:.0f}s", flush=True)
    rows = []
    for method, fit in METHODS.items():
        tick = time.perf_counter()
        model, details = fit(parts, len(class_names))
        seconds = time.perf_counter() - tick
        scores = classification_report(parts["test"][1].numpy(), predict(model, parts["test"][0]), class_names)
        rows.append({"method": method, "seconds": round(seconds, 3), "scores": scores.to_dict(), "details": details})
        print(f"   {method:14s} test accuracy {scores.accuracy:.4f}  {seconds:7.2f}s", flush=True)
    return {"case": name, "data": data, "classes": classes, "per_class": per_class, "images": sizes, "rows": rows}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| case | method | test accuracy (95% interval) | balanced accuracy | seconds | chosen C |", "|---|---|---|---|---|---|"]
    for case in results:
        for row in case["rows"]:
            s, interval = row["scores"], row["scores"]["accuracy_interval"]
            chosen = row["details"].get("C")
            lines.append(
                f"| {case['case']} | {row['method']} | {s['accuracy']:.2%} ({interval['low']:.1%}-{interval['high']:.1%}) | "
                f"{s['balanced_accuracy']:.2%} | {row['seconds']:.2f} | {'' if chosen is None else f'{chosen:.3g}'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    backbone = create_backbone(DEFAULT_BACKBONE)
    results = [run_case(name, backbone) for name in args.cases.split(",")]
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    args.output.write_text(
        json.dumps({"backbone": DEFAULT_BACKBONE, "grid": list(GRID), "machine": machine, "cases": results}, indent=1) + "\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
