"""Does ``graft advise`` rank backbones the way fine-tuning does? Score, then fine-tune, per case and backbone.

For each case (a target data set) every candidate backbone is scored by ``graft advise`` (its best LogME
over cut points, and the output layer's LogME), then fine-tuned with the ``full`` strategy on the same
split, and the Spearman rank correlation between score and test accuracy is printed per case. The
top-ranked backbone "ends within one point of the best" when its fine-tuned accuracy is at most one
point below the best candidate's.

    PYTHONPATH=. python benchmarks/advise_vs_finetune.py [--cases split-digits-30,...] [--out runs/advise-bench]
        [--source digits-0to6=runs/demo/source] [--pretrain-epochs 15]

Sources are pretrained once into ``OUT/sources`` (the split-digits recipe, ``--pretrain-epochs`` each) and
reused by later runs; ``--source NAME=RUN`` uses an existing run instead. A case whose data set or
backbone this graft does not have yet is skipped with a message, not an error. Besides ``full``, each
candidate is also trained ``frozen`` (a head on its output features), the strategy small data gets.
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

from graft import api
from graft.advice import advise, stratified_sample
from graft.data.builtin import BUILTIN
from graft.data.dataset import load_data
from graft.data.split import Split, make_split
from graft.errors import GraftError
from graft.experiments import PRETRAIN
from graft.sources import create_backbone
from graft.train.settings import TrainSettings

# Source models: small CNNs pretrained on part of a data set (a graft run directory each), and for how many
# epochs (None: --pretrain-epochs). Fashion's 27,000 images get split-fashion's two epochs: a CPU budget.
SOURCES: dict[str, tuple[str, str, int | None]] = {
    "digits-0to6": ("digits", "0-6", None),
    "digits-0to2": ("digits", "0-2", None),  # same domain, fewer classes: weaker features
    "fashion-0to4": ("fashion", "0-4", 2),
}

# case -> (target data, classes, training images per class or None for the whole training part, candidates)
CASES: dict[str, tuple[str, str | None, int | None, list[str]]] = {
    "split-digits": (
        "digits",
        "7-9",
        None,
        ["smallcnn", "src:digits-0to6", "src:digits-0to2", "src:fashion-0to4", "tf_efficientnet_lite0"],
    ),
    "split-digits-30": (
        "digits",
        "7-9",
        30,
        ["smallcnn", "src:digits-0to6", "src:digits-0to2", "src:fashion-0to4", "tf_efficientnet_lite0"],
    ),
    "split-fashion": ("fashion", "5-9", 100, ["smallcnn", "src:fashion-0to4", "src:digits-0to6", "tf_efficientnet_lite0"]),
    "devanagari": ("devanagari", None, 100, ["smallcnn", "src:digits-0to6", "src:fashion-0to4", "tf_efficientnet_lite0"]),
    "devanagari-30": ("devanagari", None, 30, ["smallcnn", "src:digits-0to6", "src:fashion-0to4", "tf_efficientnet_lite0"]),
    "photos": ("photos", None, None, ["smallcnn", "src:digits-0to6", "src:fashion-0to4", "tf_efficientnet_lite0"]),
}
FINETUNE = TrainSettings(epochs=10)


def source_run(name: str, out: Path, given: dict[str, str], epochs: int) -> str:
    """The run directory of source ``name``: given on the command line, or pretrained on first use."""
    if name in given:
        return given[name]
    run = out / "sources" / name
    if not (run / "model.safetensors").is_file():
        data, classes, own_epochs = SOURCES[name]
        settings = replace(PRETRAIN, epochs=own_epochs or epochs)
        api.fit(data, classes=classes, backbone="smallcnn", strategy="scratch", out=run, settings=settings, overwrite=True)
    return str(run)


def capped_split(data: str, classes: str | None, per_class: int | None) -> Split:
    """graft's seeded split, training and validation parts cut to ``per_class`` images a class (test untouched).

    Validation only picks the best epoch; capping it keeps a 224x224 backbone's ten validation passes on
    Fashion-MNIST's 3,000 held-out images from dominating the run, and every candidate gets the same images.
    """
    split = make_split(load_data(data, classes), seed=FINETUNE.seed)
    if per_class is None:
        return split
    cap = per_class * len(split.classes)
    return replace(split, train=stratified_sample(split.train, cap, FINETUNE.seed), val=stratified_sample(split.val, cap, FINETUNE.seed))


def usable(candidate: str, out: Path, given: dict[str, str], epochs: int) -> str | None:
    """The backbone to pass to graft, or None (with a message) if this graft cannot make it."""
    source = candidate.removeprefix("src:") if candidate.startswith("src:") else None
    if source and source not in given and SOURCES[source][0] not in BUILTIN:
        print(f"  skip {candidate}: no '{SOURCES[source][0]}' data set in this graft")
        return None
    try:
        backbone = source_run(source, out, given, epochs) if source else candidate
        create_backbone(backbone)
    except GraftError as exc:
        print(f"  skip {candidate}: {exc}")
        return None
    return backbone


def run_case(name: str, out: Path, given: dict[str, str], epochs: int) -> dict[str, Any] | None:
    data, classes, per_class, wanted = CASES[name]
    print(f"== {name}: {data} {classes or 'all classes'}, {per_class or 'all'} training images a class")
    if data not in BUILTIN:
        print(f"  skip: no '{data}' data set in this graft")
        return None
    candidates = {c: b for c in wanted if (b := usable(c, out, given, epochs)) is not None}
    split = capped_split(data, classes, per_class)
    advice = advise(data, list(candidates.values()), classes=classes, split=split)
    rows = []
    for label, backbone in candidates.items():
        own = [c for c in advice.candidates if c.backbone == backbone]
        best = max(own, key=lambda c: c.score)
        output = next(c for c in own if c.layer is None)
        accuracy = {
            strategy: api.fit(
                data,
                classes=classes,
                backbone=backbone,
                strategy=strategy,
                split=split,
                settings=FINETUNE,
                out=out / name / f"{label.replace(':', '-')}-{strategy}",
                overwrite=True,
            ).test_accuracy
            for strategy in ("frozen", "full")
        }
        rows.append(
            {
                "backbone": label,
                "best_logme": best.score,
                "best_layer": best.layer_name,
                "output_logme": output.score,
                "probe_accuracy": output.probe_accuracy,
                "similarity": advice.similarity[backbone],
                "frozen_accuracy": round(accuracy["frozen"], 4),
                "finetuned_accuracy": round(accuracy["full"], 4),
            }
        )
    scores = [r["best_logme"] for r in rows]
    rho = float(spearmanr(scores, [r["finetuned_accuracy"] for r in rows]).statistic) if len(rows) > 2 else None
    rho_frozen = (
        float(spearmanr([r["output_logme"] for r in rows], [r["frozen_accuracy"] for r in rows]).statistic) if len(rows) > 2 else None
    )
    top = max(rows, key=lambda r: r["best_logme"])
    best_accuracy = max(r["finetuned_accuracy"] for r in rows)
    result = {
        "case": name,
        "rows": rows,
        "spearman": rho,
        "spearman_output_vs_frozen": rho_frozen,
        "top_ranked": top["backbone"],
        "top_within_one_point": best_accuracy - top["finetuned_accuracy"] <= 0.01,
        "recommendation": advice.recommendation,
        "confidence": advice.confidence,
    }
    print_case(result)
    return result


def print_case(result: dict[str, Any]) -> None:
    print(f"{'backbone':<24}{'best LogME':>11}{'at':>10}{'output LogME':>14}{'probe':>8}{'similarity':>12}{'frozen':>9}{'fine-tuned':>12}")
    for r in result["rows"]:
        sim = "n/a" if r["similarity"] is None else f"{r['similarity']:.0%}"
        print(
            f"{r['backbone']:<24}{r['best_logme']:>11.3f}{r['best_layer']:>10}{r['output_logme']:>14.3f}"
            f"{r['probe_accuracy']:>8.1%}{sim:>12}{r['frozen_accuracy']:>9.2%}{r['finetuned_accuracy']:>12.2%}"
        )
    rho = "n/a" if result["spearman"] is None else f"{result['spearman']:.2f}"
    frozen = "n/a" if result["spearman_output_vs_frozen"] is None else f"{result['spearman_output_vs_frozen']:.2f}"
    print(
        f"Spearman(best LogME, fine-tuned accuracy) = {rho}; Spearman(output LogME, frozen accuracy) = {frozen}; top-ranked {result['top_ranked']} within one point of the best: {result['top_within_one_point']}"
    )
    rec = result["recommendation"]
    print(f"advice: {rec['strategy']} on {rec['backbone']} (layer {rec['layer']}); {result['confidence']['summary']}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="split-digits-30", help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, default=Path("runs/advise-bench"))
    parser.add_argument("--source", action="append", default=[], help="NAME=RUN_DIR: use an existing run as source NAME")
    parser.add_argument("--pretrain-epochs", type=int, default=PRETRAIN.epochs, help="epochs for sources pretrained here")
    args = parser.parse_args()
    given = dict(s.split("=", 1) for s in args.source)
    results = [r for name in args.cases.split(",") if (r := run_case(name.strip(), args.out, given, args.pretrain_epochs))]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "advise_vs_finetune.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
