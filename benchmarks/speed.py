"""What a user waits for, from image files at their own size: graft against the loop a user writes by hand.

    .venv/bin/python benchmarks/bench.py --only files,train_epoch,decode_memory    # these sections alone
    .venv/bin/python benchmarks/speed.py --only files                            # the same, rows into speed.json

The images: 300x300 random crops of the six colour photos scikit-image and scikit-learn ship (the
``photos`` data set's photos, class = the photo), half saved as PNG, half as JPEG, generated into a
temporary folder (Fashion-MNIST's 28x28 images are too small to show what decoding costs).

1. ``files/NAME/*`` (resnet50 with random weights, tf_efficientnet_lite0): images/s of a feature pass over
   every file, from a cold cache, each in a process of its own: eager fp32 timm as a user writes it (PIL decode, timm's
   ``create_transform`` from ``resolve_data_config``, the model under ``inference_mode``, batch 32)
   against :func:`graft.features.cached_features` (file hash, decode, resize, network, cache write); the
   features' cosine similarity; on CPUs without native bf16, ONNX Runtime fp32 by hand (the same loop, the
   model exported first, the export timed); the same with decoding in one DataLoader worker process (``--workers 1``),
   overlapping the network; where graft's time goes (hashing, decoding, the network alone).
2. ``train_epoch/lite0_STRATEGY/*`` (``finetune --unfreeze 2`` and ``full``, ImageNet weights, ``strong``
   augmentation): seconds per epoch of graft's trainer against a plain fp32 loop (PIL decode +
   torchvision transforms every epoch, the same trainable layers, AdamW and OneCycleLR; in a process of its
   own); test accuracy of
   both after the same epochs, with 95% Wilson intervals; graft with progressive resizing (``--progressive``)
   beside its default, for its seconds.
3. ``decode_memory/*``: peak resident memory of a process that decodes N images into graft's decode
   store (:mod:`graft.data.decoded`) with a 40 MB bound and runs one epoch over them: flat in N.
"""

import argparse
import copy
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch

SPEED = Path(__file__).with_name("speed.json")
SIZE = 300
BATCH = 32
SECTIONS = ("files", "train_epoch", "decode_memory")


class Rows(Protocol):
    def add(self, name: str, value: float, unit: str, baseline: float | None = None) -> None: ...


def make_photos(folder: Path, count: int, seed: int = 0) -> list[tuple[str, int]]:
    """``count`` SIZE x SIZE crops of the six photos (class = the photo), alternately PNG and JPEG; ``(path, class)``."""
    from PIL import Image
    from torchvision.transforms import v2

    from graft.data.builtin import _photos

    crop = v2.Compose(
        [v2.RandomResizedCrop(SIZE, scale=(0.1, 0.6), antialias=True), v2.RandomHorizontalFlip(), v2.ColorJitter(0.3, 0.3, 0.3)]
    )
    photos = [Image.fromarray(p).convert("RGB") for p in _photos().values()]
    samples = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for index in range(count):
            label = index % len(photos)
            path = f"{label}/{index:05d}.{'png' if index % 2 else 'jpg'}"
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            crop(photos[label]).save(folder / path, **({} if index % 2 else {"quality": 90}))
            samples.append((path, label))
    return samples


@contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into[key] = time.perf_counter() - start


def onnx_session(model: torch.nn.Module, x: torch.Tensor) -> Any:
    """An ONNX Runtime session of ``model`` as a user builds one: exported in memory, a free batch dimension, defaults."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    return ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])


def eager_features(model: torch.nn.Module, root: Path, samples: list[tuple[str, int]], onnx: bool = False) -> torch.Tensor:
    """The hand-written pass: PIL decode, timm's eval transform, the fp32 model, batch by batch.

    ``onnx``: the model exported to ONNX first (in memory, a free batch dimension) and run by ONNX Runtime's
    CPU provider at its defaults, the export included in the time, as a user's script pays for it.
    """
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=model))
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if onnx:
        session = onnx_session(model, torch.zeros(1, *resolve_data_config({}, model=model)["input_size"]))
        forward = lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(samples), BATCH):
            batch = [transform(Image.open(root / path).convert("RGB")) for path, _ in samples[start : start + BATCH]]
            outputs.append(forward(torch.stack(batch)))
    return torch.cat(outputs)


def seeded_backbone(name: str) -> Any:
    """``name`` as every benchmark here measures it, the same weights in every process: lite0 with its offline
    ImageNet weights, any other with random ones (speed does not depend on the values), seeded."""
    from graft.sources import create_backbone

    torch.manual_seed(0)
    return create_backbone(name, weights=None if name == "tf_efficientnet_lite0" else "random")


SIDE_CHILD = """
import json, sys
import speed
print(json.dumps(speed.side(*sys.argv[1:])))
"""


def side(which: str, name: str, root: str, listing: str, home: str, out: str) -> float:
    """One side of ``files`` over the files ``listing`` names (a JSON list): ``eager`` or ``onnxruntime`` by hand,
    ``graft`` or ``graft_workers_1`` (:func:`graft.features.cached_features`, a cold cache in ``home``); its
    seconds (the network built before the clock starts); its features saved to ``out`` (safetensors)."""
    from safetensors.torch import save_file

    from graft.features import cached_features

    samples = [(path, label) for path, label in json.loads(Path(listing).read_text())]
    backbone = seeded_backbone(name)
    plain = copy.deepcopy(backbone.model).eval()  # the same weights, as timm builds it: fp32, contiguous
    os.environ["GRAFT_HOME"] = home
    start = time.perf_counter()
    if which in ("eager", "onnxruntime"):
        features = eager_features(plain, Path(root), samples, onnx=which == "onnxruntime")
    else:
        features, _ = cached_features(backbone, Path(root), samples, batch_size=BATCH, workers=int(which == "graft_workers_1"))
    seconds = time.perf_counter() - start
    save_file({"features": features.float().contiguous()}, out)
    return seconds


def side_in_own_process(which: str, name: str, root: Path, listing: Path, folder: Path) -> tuple[float, torch.Tensor]:
    """:func:`side` in a fresh process, as a user's script runs: ``(seconds, features)``. Every side gets one: a pass
    run after another in the same process measured slower (graft's resnet50 pass after the eager baseline's PIL
    decoding 44-46 img/s against 47-52 alone; the eager baseline after graft's kept decoding threads, stop 33)."""
    from safetensors.torch import load_file

    out = folder / f"{name}-{which}.safetensors"
    seconds = in_own_process(SIDE_CHILD, which, name, str(root), str(listing), str(folder / f"home-{name}-{which}"), str(out))
    return seconds, load_file(out)["features"]


def in_own_process(code: str, *arguments: str, **environment: str) -> Any:
    """The JSON that ``code`` prints last, run with ``arguments`` (and ``environment`` added to this process's) in a
    fresh Python that imports graft and this folder."""
    here = Path(__file__).resolve().parent
    env = {**os.environ, **environment, "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)])}
    done = subprocess.run([sys.executable, "-c", code, *arguments], capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.splitlines()[-1])


def files(results: Rows, names: list[str], count: int) -> None:
    from graft.data.loader import make_loader
    from graft.features.cache import file_hash
    from graft.inference import forward_all, native_bf16

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        samples = make_photos(root, count)
        listing = Path(folder) / "samples.json"
        listing.write_text(json.dumps(samples))
        for name in names:
            seconds: dict[str, float] = {}
            sides = ["eager", "graft", "graft_workers_1", *([] if native_bf16() else ["onnxruntime"])]
            features = {}
            for which in sides:
                seconds[which], features[which] = side_in_own_process(which, name, root, listing, Path(folder))
            eager, ours = features["eager"], features["graft"]
            cosine = torch.nn.functional.cosine_similarity(eager.float(), ours.float())
            results.add(f"files/{name}/eager_timm_fp32", count / seconds["eager"], "images/s")
            results.add(f"files/{name}/graft_cached_features_vs_eager_fp32", count / seconds["graft"], "images/s", count / seconds["eager"])
            results.add(
                f"files/{name}/graft_workers_1_vs_eager_fp32", count / seconds["graft_workers_1"], "images/s", count / seconds["eager"]
            )
            results.add(f"files/{name}/feature_cosine_min", cosine.min().item(), "cosine")
            results.add(f"files/{name}/feature_cosine_mean", cosine.mean().item(), "cosine")
            if "onnxruntime" in seconds:  # where graft computes in fp32 too, the fastest fp32 a user can reach by hand
                results.add(
                    f"files/{name}/onnxruntime_fp32_vs_eager_fp32", count / seconds["onnxruntime"], "images/s", count / seconds["eager"]
                )
                results.add(f"files/{name}/graft_vs_onnxruntime_fp32", count / seconds["graft"], "images/s", count / seconds["onnxruntime"])
            backbone = seeded_backbone(name)
            # Where graft's time goes: each part alone, over the same files.
            with timed(seconds, "hash"):
                for path, _ in samples:
                    file_hash(root / path)
            loader = make_loader(root, samples, backbone.preprocessing, batch_size=BATCH)
            with timed(seconds, "decode"):
                batches = list(loader)
            with timed(seconds, "network"):
                forward_all(backbone, batches)
            for part in ("hash", "decode", "network"):
                results.add(f"files/{name}/graft_{part}_alone", count / seconds[part], "images/s")


def plain_epoch(model: torch.nn.Module, loader: Any, optimizer: torch.optim.Optimizer, scheduler: Any, train: Callable[[], None]) -> None:
    """One epoch as a user writes it: fp32, eager, the default AdamW."""
    loss_fn = torch.nn.CrossEntropyLoss()
    train()
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def plain_accuracy(model: torch.nn.Module, loader: Any) -> tuple[int, int]:
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct, total


class Files(torch.utils.data.Dataset):
    """The hand-written data set: open, convert, transform, every time."""

    def __init__(self, root: Path, samples: list[tuple[str, int]], transform: Callable) -> None:
        self.root, self.samples, self.transform = root, samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        return self.transform(Image.open(self.root / path).convert("RGB")), label


def plain_run(strategy: Any, settings: Any, split: Any, classes: int) -> tuple[float, int, int]:
    """The plain loop: the same lite0, trainable layers and schedule as graft's run, fp32, files decoded every
    epoch; its seconds an epoch (the validation pass included, as graft's epochs make one) and test correct/total."""
    from torchvision.transforms import v2

    from graft.model import GraftModel
    from graft.sources import create_backbone
    from graft.train.trainer import apply_freezing, seed_everything

    seed_everything(0)
    model = GraftModel(create_backbone("tf_efficientnet_lite0"), classes)
    strategy.prepare(model)
    (phase,) = strategy.phases(model, settings)
    pre = model.backbone.preprocessing
    normalise = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)]
    augment = v2.Compose(
        [v2.RandomResizedCrop(224, scale=(0.6, 1.0), antialias=True), v2.RandomHorizontalFlip(), v2.ColorJitter(0.3, 0.3, 0.3), *normalise]
    )
    plain = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), *normalise])
    root = Path(split.root)
    loaders = [
        torch.utils.data.DataLoader(Files(root, part, tf), batch_size=BATCH, shuffle=shuffle)
        for part, tf, shuffle in ((split.train, augment, True), (split.val, plain, False), (split.test, plain, False))
    ]
    optimizer = torch.optim.AdamW(phase.groups, weight_decay=settings.weight_decay)
    steps = settings.epochs * len(loaders[0])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in phase.groups], total_steps=max(steps, 20), pct_start=0.1
    )
    start = time.perf_counter()
    for _ in range(settings.epochs):
        plain_epoch(model, loaders[0], optimizer, scheduler, lambda: apply_freezing(model, phase))
        plain_accuracy(model, loaders[1])
    seconds = (time.perf_counter() - start) / settings.epochs
    correct, total = plain_accuracy(model, loaders[2])
    return seconds, correct, total


def run_of(spec: str, epochs: int) -> tuple[Any, Any]:
    """The strategy (``finetune`` is ``--unfreeze 2``) and settings both sides of ``train_epoch`` train with."""
    from graft.strategies import get_strategy
    from graft.train.settings import TrainSettings

    strategy = get_strategy("finetune", unfreeze=2) if spec == "finetune" else get_strategy(spec)
    return strategy, TrainSettings(epochs=epochs, batch_size=BATCH, patience=epochs, augment="strong")


PLAIN_CHILD = """
import json, sys
from graft.data.split import Split
import speed
spec, epochs, split, classes = json.loads(sys.argv[1])
print(json.dumps(speed.plain_run(*speed.run_of(spec, epochs), Split(**split), classes)))
"""


def plain_in_own_process(spec: str, epochs: int, split: Any, classes: int) -> tuple[float, int, int]:
    """:func:`plain_run` in a fresh process, as a user's script runs. Run after graft's runs in this process, the plain
    loop took 14.4, 18.4 and 27.0 s an epoch in three make bench runs, while graft's epochs moved far less:
    whatever graft's runs leave in a process (glibc's malloc settings, threads) may reach it, and a baseline
    must be its own."""
    seconds, correct, total = in_own_process(PLAIN_CHILD, json.dumps([spec, epochs, dataclasses.asdict(split), classes]))
    return seconds, correct, total


def photo_split(folder: Path, per_class: int, classes: int = 6) -> Any:
    """``per_class`` training, a quarter as many validation and 50 test images a class of :func:`make_photos`' crops."""
    from graft.data.split import Split

    root = folder / "images"
    samples = make_photos(root, classes * (per_class + per_class // 4 + 50), seed=1)
    train, val, test = samples[: classes * per_class], samples[classes * per_class : -classes * 50], samples[-classes * 50 :]
    return Split(root=str(root), classes=[str(c) for c in range(classes)], seed=0, train=train, val=val, test=test)


def train_epoch(results: Rows, strategies: list[str], per_class: int, epochs: int) -> None:
    from graft.evaluation import logits_of
    from graft.metrics import wilson_interval
    from graft.model import GraftModel
    from graft.sources import create_backbone
    from graft.train.trainer import seed_everything, train_model

    classes = 6
    with tempfile.TemporaryDirectory() as folder:
        split = photo_split(Path(folder), per_class, classes)
        root, test = Path(split.root), split.test
        os.environ["GRAFT_HOME"] = str(Path(folder) / "home")
        for spec in strategies:
            strategy, settings = run_of(spec, epochs)
            label = f"train_epoch/lite0_{spec}{'_unfreeze2' if spec == 'finetune' else ''}"
            seed_everything(0)
            small_first = GraftModel(create_backbone("tf_efficientnet_lite0"), classes)
            shrinking = train_model(small_first, strategy, split, replace(settings, progressive=True))
            logits, labels = logits_of(small_first, root, test, small_first.backbone.preprocessing)
            progressive_correct = int((logits.argmax(1) == labels).sum())
            seed_everything(0)
            model = GraftModel(create_backbone("tf_efficientnet_lite0"), classes)
            fitted = train_model(model, strategy, split, settings)
            graft_epoch = fitted.train_seconds / fitted.epochs
            logits, labels = logits_of(model, root, test, model.backbone.preprocessing)
            ours = int((logits.argmax(1) == labels).sum())
            plain_epoch_seconds, theirs, total = plain_in_own_process(spec, epochs, split, classes)
            results.add(f"{label}/epoch_seconds_plain_fp32", plain_epoch_seconds, "s")
            results.add(f"{label}/epoch_seconds_graft", graft_epoch, "s")
            results.add(f"{label}/epochs_per_hour_graft_vs_plain_fp32", 3600 / graft_epoch, "epochs/h", 3600 / plain_epoch_seconds)
            results.add(f"{label}/last_epoch_seconds_graft", fitted.history[-1]["seconds"], "s")
            progressive = shrinking.train_seconds / shrinking.epochs  # the first epoch at 160 pixels (--progressive)
            results.add(f"{label}/epoch_seconds_graft_progressive", progressive, "s")
            results.add(
                f"{label}/epochs_per_hour_graft_progressive_vs_plain_fp32", 3600 / progressive, "epochs/h", 3600 / plain_epoch_seconds
            )
            for who, correct in (("graft", ours), ("graft_progressive", progressive_correct), ("plain_fp32", theirs)):
                interval = wilson_interval(correct, total)
                results.add(f"{label}/test_accuracy_{who}", 100 * correct / total, "%")
                results.add(f"{label}/test_accuracy_{who}_low", 100 * interval.low, "%")
                results.add(f"{label}/test_accuracy_{who}_high", 100 * interval.high, "%")


MEMORY_CHILD = """
import json, sys
from pathlib import Path
from graft.data.decoded import DecodedImages
from graft.data.loader import make_loader
from graft.data.transforms import Preprocessing
from graft.memory import peak_memory_mb
root, count = Path(sys.argv[1]), int(sys.argv[2])
samples = [(str(p.relative_to(root)), 0) for p in sorted(root.rglob("*.*"))][:count]
pre = Preprocessing(input_size=(3, 224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875)
store = DecodedImages()
for _ in make_loader(root, samples, pre, batch_size=32, augment="light", store=store):
    pass
print(json.dumps([len(samples), len(store.tensors), peak_memory_mb()]))
"""


def decode_memory(results: Rows, counts: list[int], bound_mb: float = 40.0) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "images"
        make_photos(root, max(counts), seed=2)
        peaks = []
        for count in counts:
            images, held, peak = in_own_process(MEMORY_CHILD, str(root), str(count), GRAFT_DECODE_CACHE_MB=str(bound_mb))
            peaks.append(float(peak))
            results.add(f"decode_memory/{images}_images_{held}_held_bound_{bound_mb:g}MB", peaks[-1], "MiB")
        results.add(f"decode_memory/peak_{counts[0]}_over_{counts[-1]}_images", peaks[0], "MiB/MiB", peaks[-1])


def sections(results: Rows, args: argparse.Namespace) -> dict[str, Callable[[], None]]:
    """The runnable sections, for bench.py and this script alike."""
    return {
        "files": lambda: files(results, args.files_backbones.split(","), args.files_images),
        "train_epoch": lambda: train_epoch(results, args.train_strategies.split(","), args.train_per_class, args.train_epochs),
        "decode_memory": lambda: decode_memory(results, [int(n) for n in args.memory_counts.split(",")]),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files-images", type=int, default=2000, help="image files for the end-to-end passes")
    parser.add_argument("--files-backbones", default="resnet50,tf_efficientnet_lite0")
    parser.add_argument("--train-strategies", default="finetune,full")
    parser.add_argument("--train-per-class", type=int, default=80, help="training images a class (6 classes)")
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--memory-counts", default="250,1000,2000")


def merge(path: Path, rows: list[dict[str, Any]]) -> None:
    """``rows`` into the JSON list at ``path``, replacing rows of the same name and keeping every other."""
    old = json.loads(path.read_text()) if path.is_file() else []
    names = {row["name"] for row in rows}
    path.write_text(json.dumps([row for row in old if row["name"] not in names] + rows, indent=1) + "\n")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench import Results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--output", type=Path, default=SPEED)
    args = parser.parse_args()
    results = Results()
    runs = sections(results, args)
    for part in args.only.split(","):
        runs[part]()
        merge(args.output, results.rows)


if __name__ == "__main__":
    main()
