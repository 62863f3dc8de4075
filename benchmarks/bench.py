"""graft's forward and training passes against the code a user writes by hand, measured in one run.

    make bench        # = .venv/bin/python benchmarks/bench.py; prints tables, writes benchmarks/results.json

results.json is a list of ``{"name", "value", "unit"}`` objects, with ``"baseline"`` and ``"ratio"`` (value
over baseline, higher is better) where a baseline applies. Every ratio compares figures taken in this one
run, one after the other, so a shared machine's load shifts both sides alike (not perfectly: run it on a
quiet machine for figures to quote). The hand-written sides run in processes of their own, as a user's
script does: in this one they inherit what graft's passes and exports leave in the heap (eager lite0 ran
3x faster after an ONNX export). The measurements:

1. ``features/NAME/*``: images/s of feature extraction (pooled pre-logits features, 224x224, batch 32,
   inference mode, a batch of real images) for resnet50, vgg16 and tf_efficientnet_lite0: plain eager
   fp32 timm (the baseline), ONNX Runtime fp32, and graft's default (:func:`graft.inference.forward_batches`)
   the ways it runs: a short pass eager in bf16 (fp32 on CPUs without native bf16), a long one (predicted
   over three minutes) in int8 where int8 agrees with fp32 on the batch, else through ONNX Runtime on CPUs
   without native bf16 or compiled in bf16 on the others (compiled is given too), with its steady state, build time,
   break-even and rate over 70,000 images; on CPUs without native bf16, a medium pass (90 s of plain eager
   work: ONNX Runtime's, past :data:`graft.inference.ONNXRUNTIME_AFTER_SECONDS`) against ONNX Runtime;
   graft's achieved GFLOP/s as a fraction of the matrix-product peak measured at the long pass's precision
   in this run.
2. ``agreement/NAME/*``: graft's default against fp32 on real images (Fashion-MNIST, or the photos set
   where the Debian package is missing): cosine similarity of the features, and the difference of a
   cross-validated linear probe's accuracy, for the short pass, the long pass, and ``--precision int8``. Offline only lite0 has real ImageNet weights; resnet50 and
   vgg16 run with random weights (speed does not depend on the values; agreement still compares the same
   network in two precisions).
3. ``end_to_end/resnet50``: images/s of graft's feature cache filling from image files on disk (file hash,
   PNG decode, resize, normalise, network, write), against the model-only figure of 1.
4. ``finetune/lite0``: seconds per epoch of ``finetune --unfreeze 2`` (lite0, ImageNet weights) at
   graft's default against ``--precision fp32``, and their test accuracies after the same epochs.
5. ``memory/extract_*``: peak resident memory of a process that fills the feature cache for 10,000 and
   for 70,000 Fashion-MNIST images with lite0 at 32x32 input (1,280 features an image, 358 MB for 70,000
   if they were held: the pipeline's memory is measured, at a speed that fits a benchmark run).
6. ``distributed/*``: one process with 2 threads against 2 processes with 1 thread each (torch.distributed,
   gloo): feature extraction of 300 images and a fine-tuning epoch with lite0 (see ``benchmarks/distributed.py``,
   which also writes them alone to ``benchmarks/distributed.json``).
7. ``files/*``, ``train_epoch/*``, ``decode_memory/*``: end to end from image files at their own size, a
   fine-tuning epoch against a plain fp32 loop, the decode store's memory (benchmarks/speed.py).

``--only files,train_epoch`` runs those sections alone; rows of sections not run are kept in results.json.
"""

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import speed  # benchmarks/speed.py, beside this script
import torch
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).with_name("results.json")
BATCH = 32
console = Console(stderr=True)


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...] = (2048, 4096), seconds: float = 2.0) -> float:
    """G(FL)OP/s of square matrix products in ``dtype``: the ceiling a network can approach.

    The best size and the best of four windows, not a mean: a ceiling must not sink with a moment of load
    elsewhere on a shared machine (one 2 s mean once put the fp32 peak at 119 GFLOP/s in a run where
    vgg16's eager convolutions reached 133).
    """
    best = 0.0
    for size in sizes:
        if dtype == torch.int8:  # int8 x int8 -> int32, the product oneDNN's int8 convolutions are made of
            a, b = (torch.randint(-128, 127, (size, size), dtype=dtype) for _ in range(2))
            product = torch._int_mm
        else:
            a, b, product = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype), torch.matmul
        windows = (images_per_second(lambda: product(a, b), 2 * size**3, seconds / 4) / 1e9 for _ in range(4))  # noqa: B023 ("images" = FLOPs here)
        best = max(best, *windows)
    return best


def measurable_peaks() -> dict[str, torch.dtype]:
    """The precisions whose matrix-product peak means something on this CPU.

    bf16 without AVX512-BF16 or AMX is emulated (graft runs fp32 there), and torch's int8 product
    without VNNI falls back to a reference loop at about 2 GOP/s (measured on an AVX2 EPYC), which is no
    ceiling for oneDNN's int8 convolutions: those ran resnet50 at 3.5-5x eager fp32 on that same CPU.
    """
    from graft.inference import native_bf16

    vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)()
    candidates = {"fp32": (torch.float32, True), "bf16": (torch.bfloat16, native_bf16()), "int8": (torch.int8, vnni)}
    return {name: dtype for name, (dtype, native) in candidates.items() if native}


def flops_per_image(model: torch.nn.Module) -> float:
    """Floating-point operations of one 224x224 forward pass (2 per multiply-add), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.randn(1, 3, 224, 224))
    return float(counter.get_total_flops())


def images_per_second(run: Callable[[], Any], images: int, seconds: float) -> float:
    """Calls ``run`` (one batch of ``images``) after a warm-up until ``seconds`` have passed (at least twice)."""
    run()
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        run()
        calls += 1
    return calls * images / (time.perf_counter() - start)


class Results:
    """The rows of results.json, printed as they come."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, value: float, unit: str, baseline: float | None = None) -> None:
        row: dict[str, Any] = {"name": name, "value": round(value, 4), "unit": unit}
        if baseline is not None:
            row.update(baseline=round(baseline, 4), ratio=round(value / baseline, 3))
        self.rows.append(row)
        console.print(f"  {name}: {value:.4g} {unit}" + (f"  ({row['ratio']:.2f}x {baseline:.4g})" if baseline is not None else ""))

    def table(self) -> Table:
        table = Table(title="make bench")
        for column in ("name", "value", "unit", "baseline", "ratio"):
            table.add_column(column, justify="left" if column == "name" else "right")
        for row in self.rows:
            table.add_row(
                row["name"],
                f"{row['value']:.4g}",
                row["unit"],
                f"{row['baseline']:.4g}" if "baseline" in row else "",
                f"{row['ratio']:.2f}x" if "ratio" in row else "",
            )
        return table


@contextmanager
def compiling(mode: str) -> Iterator[None]:
    """``GRAFT_COMPILE=mode`` for the passes started inside (graft.inference reads it as a pass begins)."""
    os.environ["GRAFT_COMPILE"] = mode
    try:
        yield
    finally:
        os.environ.pop("GRAFT_COMPILE")


class Repeated:
    """``count`` batches, all ``x``: a pass of known length, as a data loader gives one (graft's runner predicts
    the pass's eager work from its length: under ``--compile auto`` a long pass builds a faster copy)."""

    def __init__(self, x: torch.Tensor, count: int) -> None:
        self.batch, self.count = (x, torch.zeros(len(x))), count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return itertools.repeat(self.batch, self.count)


def graft_pass(
    backbone: torch.nn.Module, x: torch.Tensor, compile: str, seconds: float, precision: str = "auto", images: int = 70_000
) -> tuple[float, float]:
    """``(seconds to the copy's first output, images/s after it)`` of one :func:`forward_batches` pass of ``images``.

    One pass, as a feature cache fill runs: the int8, compiled or ONNX Runtime copy lives as long as its pass,
    so the first outputs carry the time to build it and the rest is the steady state. ``--compile on`` builds
    on the first batch; ``auto`` runs three batches eagerly to predict the pass's length, then builds.
    """
    from graft.inference import forward_batches

    with compiling(compile):
        outputs = forward_batches(backbone, Repeated(x, images // len(x)), precision)
        start = time.perf_counter()
        for _ in range(4 if compile == "auto" else 1):
            next(outputs)
        first = time.perf_counter() - start
        rate = images_per_second(lambda: next(outputs), len(x), seconds)
        outputs.close()
    return first, rate


HAND_WRITTEN_CHILD = """
import json, sys
import timm
import torch
from safetensors.torch import load_file
import speed
from bench import images_per_second
name, inputs, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
x = load_file(inputs)["x"]
plain = timm.create_model(name, pretrained=False, num_classes=0).eval()
with torch.inference_mode():
    eager = images_per_second(lambda: plain(x), len(x), seconds)
session = speed.onnx_session(plain, x)
ort = images_per_second(lambda: session.run(None, {"x": x.numpy()}), len(x), seconds)
print(json.dumps([eager, ort]))
"""


def hand_written(name: str, x: torch.Tensor, seconds: float) -> tuple[float, float]:
    """Images/s of plain eager fp32 timm on ``x``, then of ONNX Runtime on its export, in a fresh process as a user's
    script runs: in make bench's process eager lite0 ran at 85 img/s after vgg16's ONNX export, 25 alone (what
    the export left in glibc's heap; graft.heap keeps freed memory for graft's own passes on purpose)."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as folder:
        inputs = str(Path(folder) / "x.safetensors")
        save_file({"x": x.contiguous()}, inputs)
        eager, ort = speed.in_own_process(HAND_WRITTEN_CHILD, name, inputs, str(seconds))
    return eager, ort


def feature_speed(results: Results, names: list[str], seconds: float, images: int = 70_000) -> None:
    import timm

    from graft.data.loader import make_loader
    from graft.inference import prepare, resolve
    from graft.quantize import AGREEMENT, quantized

    peaks = {name: matmul_peak(dtype) for name, dtype in measurable_peaks().items()}
    for name, value in peaks.items():
        results.add(f"matmul/{name}_peak", value, "GFLOP/s")
    floating = resolve("auto")  # what graft's passes run in here when they do not run in int8
    root, samples = real_images(4)  # real images: whether int8 is kept depends on how they quantize
    for name in names:
        backbone = speed.seeded_backbone(name)
        x = next(iter(make_loader(root, samples, backbone.preprocessing, batch_size=BATCH)))[0]
        eager, ort = hand_written(name, x, seconds)
        plain = timm.create_model(name, pretrained=False, num_classes=0).eval()  # for its FLOPs: as the hand-written side builds it
        with torch.inference_mode():
            agreement = quantized(prepare(backbone).eval(), x)[2]  # the check a long pass makes on its fourth batch
        precision = "int8" if agreement >= AGREEMENT else floating
        _, short = graft_pass(backbone, x, "off", seconds)
        build_seconds, ours = graft_pass(backbone, x, "auto", seconds)
        _, compiled = graft_pass(backbone, x, "on", seconds, floating)
        # 90 s of plain eager work (graft's eager pass is faster): past ONNX Runtime's threshold, short of compiling's
        if floating == "fp32":
            _, medium = graft_pass(backbone, x, "auto", seconds, images=int(eager * 90))
            results.add(f"features/{name}/graft_medium_pass_vs_onnxruntime_fp32", medium, "images/s", ort)
        gflops = flops_per_image(plain) / 1e9
        results.add(f"features/{name}/gflop_per_image", gflops, "GFLOP")
        results.add(f"features/{name}/eager_fp32_share_of_fp32_peak", eager * gflops / peaks["fp32"], "fraction")
        results.add(f"features/{name}/eager_fp32", eager, "images/s")
        results.add(f"features/{name}/onnxruntime_fp32", ort, "images/s", eager)
        # graft's default: passes predicted under graft.inference.INT8_AFTER_SECONDS (COMPILE_AFTER_SECONDS for a network
        # with depthwise convolutions) run eagerly (bf16 or fp32)...
        results.add(f"features/{name}/graft_short_pass_vs_eager_fp32", short, "images/s", eager)
        # ... longer ones in int8 where its outputs agree with fp32 (1 here), else compiled
        results.add(f"features/{name}/int8_feature_cosine_min", agreement, "cosine")
        results.add(f"features/{name}/long_pass_runs_int8", float(precision == "int8"), "yes=1")
        results.add(f"features/{name}/graft_compiled_{floating}_vs_eager_fp32", compiled, "images/s", eager)
        # the long pass's steady state (auto keeps a copy only where it beats eager), build time (three eager
        # batches, then the copy's first), both over 70k images
        ours = max(ours, short)
        results.add(f"features/{name}/graft_vs_eager_fp32", ours, "images/s", eager)
        results.add(f"features/{name}/graft_vs_onnxruntime_fp32", ours, "images/s", ort)
        if precision in peaks:
            results.add(f"features/{name}/graft_share_of_{precision}_matmul_peak", ours * gflops / peaks[precision], "fraction")
        results.add(f"features/{name}/build_seconds", build_seconds, "s")
        if ours > short:
            results.add(f"features/{name}/build_break_even_images", build_seconds / (1 / short - 1 / ours), "images")
        results.add(f"features/{name}/graft_{images}_images_vs_eager_fp32", images / (build_seconds + images / ours), "images/s", eager)


def real_images(per_class: int) -> tuple[Path, list[tuple[str, int]]]:
    """``per_class`` images a class of Fashion-MNIST's training part (the photos set without the package)."""
    from graft.data.builtin import dataset_root
    from graft.data.sources import load_image_set
    from graft.data.split import subsample
    from graft.errors import GraftError

    try:
        root = dataset_root("fashion")
    except GraftError:
        root = dataset_root("photos")
    images = load_image_set(root)
    return images.root, subsample(images.samples, per_class, seed=0)


def agreement(results: Results, names: list[str], per_class: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from graft.data.loader import make_loader
    from graft.inference import forward_all

    root, samples = real_images(per_class)
    for name in names:
        backbone = speed.seeded_backbone(name)
        loader = make_loader(root, samples, backbone.preprocessing, batch_size=BATCH)
        with compiling("off"):
            fp32, labels = forward_all(backbone, loader, "fp32")
        probe = LogisticRegression(max_iter=2000)
        baseline = cross_val_score(probe, fp32.numpy(), labels.numpy(), cv=5).mean() * 100
        results.add(f"agreement/{name}/probe_accuracy_fp32", baseline, "%")
        paths = (("off", "auto", "graft"), ("on", "auto", "graft_long_pass"), ("on", "int8", "graft_int8"))  # short, long, forced
        for compile, precision, path in paths:
            with compiling(compile):
                ours, _ = forward_all(backbone, loader, precision)
            cosine = torch.nn.functional.cosine_similarity(fp32, ours)
            results.add(f"agreement/{name}/{path}_feature_cosine_min", cosine.min().item(), "cosine")
            results.add(f"agreement/{name}/{path}_feature_cosine_mean", cosine.mean().item(), "cosine")
            score = cross_val_score(probe, ours.numpy(), labels.numpy(), cv=5).mean() * 100
            results.add(f"agreement/{name}/probe_accuracy_{path}", score, "%")
            results.add(f"agreement/{name}/probe_accuracy_difference_{path}", score - baseline, "points")


def end_to_end(results: Results, name: str, per_class: int, seconds: float) -> None:
    from graft.features import FeatureCache
    from graft.inference import forward_all
    from graft.sources import create_backbone

    root, samples = real_images(per_class)
    backbone = create_backbone(name, weights="random")
    x = torch.randn(BATCH, 3, 224, 224)
    model_only = images_per_second(lambda: forward_all(backbone, [(x, torch.zeros(BATCH))]), BATCH, seconds)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        FeatureCache(backbone, root=Path(cache)).fill(root, samples, batch_size=BATCH)
        files = len(samples) / (time.perf_counter() - start)
    results.add(f"end_to_end/{name}/from_files_vs_model_only", files, "images/s", model_only)


def finetune(results: Results, per_class: int, epochs: int) -> None:
    from graft.data.sources import load_image_set
    from graft.data.split import make_split, subsample
    from graft.evaluation import accuracy as test_accuracy
    from graft.evaluation import logits_of
    from graft.model import GraftModel
    from graft.sources import create_backbone
    from graft.strategies import get_strategy
    from graft.train.settings import TrainSettings
    from graft.train.trainer import seed_everything, train_model

    root, _ = real_images(per_class)
    split = make_split(load_image_set(root), seed=0, per_class=per_class)
    split = replace(split, val=subsample(split.val, max(per_class // 4, 1)), test=subsample(split.test, 100))  # stratified, smaller
    seconds, accuracy = {}, {}
    for precision in ("fp32", "auto"):
        settings = TrainSettings(epochs=epochs, batch_size=BATCH, patience=epochs, precision=precision)
        seed_everything(0)
        model = GraftModel(create_backbone("tf_efficientnet_lite0"), len(split.classes))
        with tempfile.TemporaryDirectory() as home:
            os.environ["GRAFT_HOME"] = home
            fitted = train_model(model, get_strategy("finetune", unfreeze=2), split, settings)
        seconds[precision] = fitted.train_seconds / fitted.epochs
        accuracy[precision] = test_accuracy(*logits_of(model, root, split.test, model.backbone.preprocessing, precision)) * 100
    results.add("finetune/tf_efficientnet_lite0/epoch_seconds_fp32", seconds["fp32"], "s")
    results.add("finetune/tf_efficientnet_lite0/epochs_per_hour_graft_vs_fp32", 3600 / seconds["auto"], "epochs/h", 3600 / seconds["fp32"])
    results.add("finetune/tf_efficientnet_lite0/test_accuracy_fp32", accuracy["fp32"], "%")
    results.add("finetune/tf_efficientnet_lite0/test_accuracy_graft", accuracy["auto"], "%")
    results.add("finetune/tf_efficientnet_lite0/test_accuracy_difference", accuracy["auto"] - accuracy["fp32"], "points")


MEMORY_CHILD = """
import json, sys, tempfile
from dataclasses import replace
from pathlib import Path
from graft.memory import peak_memory_mb
from graft.sources import create_backbone
from graft.data.sources import load_image_set
from graft.features import FeatureCache
images = load_image_set(Path(sys.argv[1]), bad_images="skip")
samples = images.samples[: int(sys.argv[2])]
backbone = create_backbone("tf_efficientnet_lite0")
backbone.preprocessing = replace(backbone.preprocessing, input_size=(3, 32, 32))  # 1,280 features an image, fast
with tempfile.TemporaryDirectory() as cache:
    FeatureCache(backbone, root=Path(cache)).fill(images.root, samples, batch_size=256)
print(json.dumps([len(samples), peak_memory_mb()]))
"""


def memory(results: Results, counts: list[int]) -> None:
    from graft.data.builtin import dataset_root
    from graft.errors import GraftError

    try:
        root = dataset_root("fashion")
    except GraftError as exc:
        console.print(f"  memory: skipped ({exc})")
        return
    peaks = []
    for count in counts:
        images, peak = speed.in_own_process(MEMORY_CHILD, str(root), str(count))
        peaks.append(peak)
        results.add(f"memory/extract_{images}_images", peaks[-1], "MiB")
    results.add(f"memory/extract_{counts[0]}_over_{counts[-1]}_images", peaks[0], "MiB/MiB", peaks[-1])


def distributed(results: Results) -> None:
    from distributed import run  # benchmarks/distributed.py (this script's folder is on sys.path): also writes distributed.json

    for row in run():
        results.add(row["name"], row["value"], row["unit"], row.get("baseline"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each throughput figure is measured")
    parser.add_argument("--backbones", default="resnet50,vgg16,tf_efficientnet_lite0")
    parser.add_argument("--probe-per-class", type=int, default=40, help="images a class for the agreement probe")
    parser.add_argument("--finetune-per-class", type=int, default=50)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--memory", default="10000,70000", help="image counts of the memory check")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the results go (a run on other hardware: elsewhere)")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: features,agreement,end_to_end,finetune,memory,...")
    parser.add_argument("--only", default="", help="comma-separated parts to run, the others left out (their rows kept)")
    speed.add_arguments(parser)
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    names = args.backbones.split(",")
    results = Results()
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    parts: dict[str, Callable[[], None]] = {
        "features": lambda: feature_speed(results, names, args.seconds),
        "agreement": lambda: agreement(results, names, args.probe_per_class),
        "end_to_end": lambda: end_to_end(results, names[0], 25, args.seconds),
        "finetune": lambda: finetune(results, args.finetune_per_class, args.finetune_epochs),
        "memory": lambda: memory(results, [int(n) for n in args.memory.split(",")]),
        "distributed": lambda: distributed(results),
        **speed.sections(results, args),
    }
    only = set(args.only.split(",")) - {""}
    for part, run in parts.items():
        if part not in skip and (not only or part in only):
            console.print(f"[bold]{part}[/]")
            run()
            speed.merge(args.output, results.rows)  # what is measured survives a later failure; other rows are kept
    Console().print(results.table())


if __name__ == "__main__":
    main()
