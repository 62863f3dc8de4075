"""Does averaging with the mirror image (``--tta flip``) help, and would ``--tta auto`` see it on validation?

Per case (a built-in data set, graft's seeded split with ``per_class`` training images a class) and
strategy, one ``graft.fit`` with the default backbone and settings (``tta="none"``), then the saved model's
validation and test figures without and with the flip (``graft.evaluation.logits_of``), each pass timed.
``auto`` is what :func:`graft.evaluation.choose_tta` picks from the validation figures (balanced accuracy
where the classes are uneven, else accuracy; a tie keeps ``none``). Test figures come with 95% intervals,
and the paired count of test images only the flip gets right against those only the plain pass gets right.
``--cap-val``/``--cap-test`` keep at most that many validation/test images a class (graft's seeded
subsample), to fit a fine-tuning run's per-epoch validation passes into a benchmark slot; the row says so.
``frozen`` without augmentation trains the same solved head on the same cached features as ``features``.
Results are merged into the output by (case, strategy), so cases can run as separate invocations:

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/tta.py --cases fashion-5to9-100 --strategies features
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import graft
from graft.backbones import DEFAULT_BACKBONE
from graft.data.dataset import load_data
from graft.data.split import Split, make_split, subsample
from graft.evaluation import headline, logits_of
from graft.metrics import classification_report
from graft.tta import TTAS

# case -> (built-in data set, classes, training images a class)
CASES: dict[str, tuple[str, str | None, int]] = {
    "fashion-5to9-100": ("fashion", "5-9", 100),
    "devanagari-100": ("devanagari", None, 100),
}
STRATEGIES = ("features", "frozen", "finetune")


def case_split(case: str, cap_val: int | None, cap_test: int | None) -> Split:
    """graft's seeded split of the case (``per_class`` training images a class), validation and test capped if asked."""
    data, classes, per_class = CASES[case]
    split = make_split(load_data(data, classes), seed=0, per_class=per_class)
    val = subsample(split.val, cap_val) if cap_val else split.val
    test = subsample(split.test, cap_test) if cap_test else split.test
    return Split(split.root, split.classes, split.seed, split.train, val, test)


def run_case(case: str, strategy: str, folder: Path, cap_val: int | None = None, cap_test: int | None = None) -> dict[str, Any]:
    data, classes, _ = CASES[case]
    split = case_split(case, cap_val, cap_test)
    run = graft.fit(data, classes=classes, strategy=strategy, split=split, out=folder / f"{case}-{strategy}", report=False)
    model, pre = run.model, run.saved.preprocessing
    figures: dict[str, dict[str, Any]] = {}
    right: dict[str, Any] = {}
    for part in ("val", "test"):
        for tta in TTAS:
            tick = time.perf_counter()
            logits, labels = logits_of(model, split.root, getattr(split, part), pre, tta=tta)
            seconds = time.perf_counter() - tick
            right[f"{part}/{tta}"] = (logits.argmax(1) == labels).numpy()
            scores = classification_report(labels.numpy(), logits.argmax(1).numpy(), split.classes)
            figures[f"{part}/{tta}"] = {"seconds": round(seconds, 2), "scores": scores.to_dict(), "headline": headline(scores)}
            print(f"   {case} {strategy} {part} {tta}: accuracy {scores.accuracy:.4f} in {seconds:.0f}s", flush=True)
    auto = "flip" if figures["val/flip"]["headline"] > figures["val/none"]["headline"] else "none"
    flip_only = int((right["test/flip"] & ~right["test/none"]).sum())
    none_only = int((right["test/none"] & ~right["test/flip"]).sum())
    return {
        "case": case,
        "strategy": strategy,
        "images": {part: len(getattr(split, part)) for part in ("train", "val", "test")},
        "cap_val": cap_val,
        "cap_test": cap_test,
        "train_seconds": run.result.train_seconds,
        "auto": auto,
        "test_paired": {"flip_only": flip_only, "none_only": none_only},
        "figures": figures,
    }


def cell(figure: dict[str, Any]) -> str:
    """A test figure with its 95% interval (balanced accuracy's where the classes are uneven)."""
    s = figure["scores"]
    i = s["balanced_accuracy_interval"] if s["imbalanced"] else s["accuracy_interval"]
    return f"{figure['headline']:.2%} ({i['low']:.1%}-{i['high']:.1%})"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | strategy | val none | val flip | test none (95%) | test flip (95%) | flip - none (test) | only flip right / only none right | auto picks | flip pass / plain |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["figures"]
        gain = f["test/flip"]["headline"] - f["test/none"]["headline"]
        paired = "{flip_only} / {none_only}".format(**r["test_paired"]) if "test_paired" in r else "-"
        lines.append(
            f"| {r['case']} | {r['strategy']} | {f['val/none']['headline']:.2%} | {f['val/flip']['headline']:.2%} | {cell(f['test/none'])} | "
            f"{cell(f['test/flip'])} | {gain * 100:+.2f} pt | {paired} | {r['auto']} | {f['test/flip']['seconds'] / f['test/none']['seconds']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--cap-val", type=int, help="keep at most this many validation images a class")
    parser.add_argument("--cap-test", type=int, help="keep at most this many test images a class")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    old = json.loads(args.output.read_text())["rows"] if args.output.is_file() else []
    with tempfile.TemporaryDirectory(prefix="graft-tta-") as folder:
        for case in args.cases.split(","):
            for strategy in args.strategies.split(","):
                row = run_case(case, strategy, Path(folder), args.cap_val, args.cap_test)
                old = [r for r in old if (r["case"], r["strategy"]) != (case, strategy)] + [row]
                machine = {
                    "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                }
                args.output.write_text(json.dumps({"backbone": DEFAULT_BACKBONE, "machine": machine, "rows": old}, indent=1) + "\n")
    print(table(old))


if __name__ == "__main__":
    main()
