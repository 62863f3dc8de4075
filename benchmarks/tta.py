"""Does averaging with the mirror image (``--tta flip``) help, and would ``--tta auto`` see it on validation?

Per case (a built-in data set, graft's seeded split with ``per_class`` training images a class) and
strategy, one ``graft.fit`` with the default backbone and settings (``tta="none"``), then the saved model's
validation and test figures without and with the flip (``graft.evaluation.logits_of``), each pass timed.
``auto`` is what :func:`graft.evaluation.choose_tta` picks from the validation figures (balanced accuracy
where the classes are uneven, else accuracy; a tie keeps ``none``). Test figures come with 95% intervals.
Results are merged into the output by (case, strategy), so cases can run as separate invocations:

    GRAFT_HOME=/tmp/graft-home-evalq OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/tta.py --cases fashion-5to9-100 --strategies features
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
from graft.data.split import SPLIT_FILE, Split
from graft.evaluation import headline, logits_of
from graft.metrics import classification_report
from graft.tta import TTAS

# case -> (built-in data set, classes, training images a class)
CASES: dict[str, tuple[str, str | None, int]] = {
    "fashion-5to9-100": ("fashion", "5-9", 100),
    "devanagari-100": ("devanagari", None, 100),
}
STRATEGIES = ("features", "frozen", "finetune")


def run_case(case: str, strategy: str, folder: Path) -> dict[str, Any]:
    data, classes, per_class = CASES[case]
    run = graft.fit(data, classes=classes, per_class=per_class, strategy=strategy, out=folder / f"{case}-{strategy}", report=False)
    split, model, pre = Split.load(run.path / SPLIT_FILE), run.model, run.saved.preprocessing
    figures: dict[str, dict[str, Any]] = {}
    for part in ("val", "test"):
        for tta in TTAS:
            tick = time.perf_counter()
            logits, labels = logits_of(model, split.root, getattr(split, part), pre, tta=tta)
            seconds = time.perf_counter() - tick
            scores = classification_report(labels.numpy(), logits.argmax(1).numpy(), split.classes)
            figures[f"{part}/{tta}"] = {"seconds": round(seconds, 2), "scores": scores.to_dict(), "headline": headline(scores)}
            print(f"   {case} {strategy} {part} {tta}: accuracy {scores.accuracy:.4f} in {seconds:.0f}s", flush=True)
    auto = "flip" if figures["val/flip"]["headline"] > figures["val/none"]["headline"] else "none"
    images = {part: len(getattr(split, part)) for part in ("train", "val", "test")}
    return {
        "case": case,
        "strategy": strategy,
        "images": images,
        "train_seconds": run.result.train_seconds,
        "auto": auto,
        "figures": figures,
    }


def cell(figure: dict[str, Any]) -> str:
    """A test figure with its 95% interval (balanced accuracy's where the classes are uneven)."""
    s = figure["scores"]
    i = s["balanced_accuracy_interval"] if s["imbalanced"] else s["accuracy_interval"]
    return f"{figure['headline']:.2%} ({i['low']:.1%}-{i['high']:.1%})"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | strategy | val none | val flip | test none (95%) | test flip (95%) | flip - none (test) | auto picks | flip pass / plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["figures"]
        gain = f["test/flip"]["headline"] - f["test/none"]["headline"]
        lines.append(
            f"| {r['case']} | {r['strategy']} | {f['val/none']['headline']:.2%} | {f['val/flip']['headline']:.2%} | {cell(f['test/none'])} | "
            f"{cell(f['test/flip'])} | {gain * 100:+.2f} pt | {r['auto']} | {f['test/flip']['seconds'] / f['test/none']['seconds']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--output", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    old = json.loads(args.output.read_text())["rows"] if args.output.is_file() else []
    with tempfile.TemporaryDirectory(prefix="graft-tta-") as folder:
        for case in args.cases.split(","):
            for strategy in args.strategies.split(","):
                row = run_case(case, strategy, Path(folder))
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
