"""The ``graft`` command line: a thin typer layer over :mod:`graft.api`.

Results go to stdout (a table, or JSON with ``--json``); progress and messages go to stderr. A
:class:`GraftError` ends the command with its one-line message and exit code 2, never a traceback.
"""

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from graft import api, distributed
from graft.backbones import DEFAULT_BACKBONE
from graft.config import FitConfig
from graft.console import stderr, stdout
from graft.errors import GraftError, Interrupted
from graft.evaluation import evaluate as run_evaluate
from graft.evaluation import predict as run_predict
from graft.inference import compile_mode
from graft.results import COLUMNS, LABELS, ranked
from graft.train.settings import ema_setting

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__.splitlines()[0])

Data = Annotated[
    str,
    typer.Argument(
        help="an image folder (one sub-folder a class; Train/ and Test/ parts allowed), a CSV of path,label rows, or a built-in data set: digits, devanagari, fashion"
    ),
]
Classes = Annotated[str | None, typer.Option(help="classes to use, e.g. 7-9 or cat,dog; labels are re-indexed")]
Backbone = Annotated[
    str, typer.Option(help="a timm model name (see 'graft backbones'), smallcnn, or a graft run directory whose backbone to transfer")
]
Weights = Annotated[
    str | None,
    typer.Option(help="backbone weights: a .safetensors file or a PyTorch state dict (loaded without executing code), or 'random'"),
]
Layer = Annotated[int | None, typer.Option(help="cut a timm backbone after this stage (0 = stem, -1 = last), features averaged over space")]
Unfreeze = Annotated[
    int | None,
    typer.Option(
        help="finetune: train the last N blocks, in timm's stage structure (resnet: stem, layer1..layer4); default: the last half"
    ),
]
FreezeFirst = Annotated[
    int | None,
    typer.Option(help="finetune: freeze the first K layers (modules with parameters: convolutions, norms, linears, in forward order)"),
]
STRATEGY_HELP = "features, frozen, finetune, full, lpft or scratch"
Out = Annotated[Path | None, typer.Option(help="run directory to write (default: runs/NAME)")]
Epochs = Annotated[int | None, typer.Option(help="epochs per phase (early stopping may end sooner)")]
Lr = Annotated[float | None, typer.Option(help="learning rate of the head")]
Batch = Annotated[int | None, typer.Option("--batch-size", help="images per batch")]
Augment = Annotated[
    str | None,
    typer.Option(
        help="none, light, strong, trivial (TrivialAugment, never mirrors: characters, digits) or trivial-flip (photos): training images only"
    ),
]
Mix = Annotated[
    str | None,
    typer.Option(
        help="none, mixup, cutmix or mixup-cutmix (one of the two each batch): each training batch blended with a shuffled copy of itself, labels alike; images only (not features' cached inputs)"
    ),
]
DropPathRate = Annotated[
    float | None,
    typer.Option(
        "--drop-path",
        help="stochastic depth: residual branches dropped at random while training, up to this rate in the last block (timm's --drop-path; default 0: off)",
    ),
]
Progressive = Annotated[
    bool | None,
    typer.Option(
        "--progressive/--no-progressive",
        help="progressive resizing: the first half of the epochs that feed images to the network train at 0.7 of the side, the last at the full side; validation always at the full side",
    ),
]
LayerDecay = Annotated[
    float | None,
    typer.Option(help="each transferred block learns this much slower than the next (default 1: all alike; timm's --layer-decay)"),
]
BatchNorm = Annotated[
    str | None,
    typer.Option(
        "--batchnorm",
        help="frozen (pretrained BatchNorm statistics kept while their layers train, as Keras' fine-tuning guide does) or train (each batch's statistics): transfer strategies that train the backbone",
    ),
]
ImageSize = Annotated[int | None, typer.Option(help="square input side in pixels (default: the backbone's own, 224 for lite0)")]
Head = Annotated[str | None, typer.Option(help="linear or mlp")]
Seed = Annotated[int | None, typer.Option(help="seed for the split, weights and shuffling")]
Workers = Annotated[int | None, typer.Option(help="DataLoader worker processes")]
PerClass = Annotated[int | None, typer.Option(help="keep at most this many training images a class (validation/test unchanged)")]
Precision = Annotated[
    str | None,
    typer.Option(
        help="auto (bf16 where the CPU computes it natively, else fp32; long passes int8 where it agrees with fp32), int8, bf16 or fp32: the precision of forward passes"
    ),
]
Device = Annotated[
    str | None,
    typer.Option(help="auto (CUDA, then Apple MPS, then the CPU), cpu, cuda, cuda:N or mps: where networks run"),
]
ClassWeight = Annotated[
    str | None,
    typer.Option(
        help="auto (where the training classes are uneven, largest/smallest >= 1.5: after training, move the decisions towards the "
        "rare classes by as much as scores best on validation), balanced (weigh each class's images so every class counts alike) or none"
    ),
]
Ema = Annotated[
    str | None,
    typer.Option(
        help="off (the default), on (a moving average of the weights, kept where it scores better on validation), or its decay (e.g. 0.99)"
    ),
]
FitTta = Annotated[
    str | None,
    typer.Option(
        help="test-time augmentation of the test figure and of later predictions: none, flip (average with the mirror image) or auto (flip where it scores higher on the validation part)"
    ),
]
RunTta = Annotated[
    str | None, typer.Option(help="test-time augmentation: none or flip (average with the mirror image); default: the run's own choice")
]
Json = Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout")]
Overwrite = Annotated[bool, typer.Option(help="replace an existing --out directory")]
Report = Annotated[bool, typer.Option(help="write report.html into the run directory when training ends")]
TensorBoard = Annotated[
    bool, typer.Option("--tensorboard", help="also write the per-epoch metrics as TensorBoard events (RUN/tensorboard)")
]
Resume = Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint (same options)")]
Nproc = Annotated[
    int,
    typer.Option(
        help="processes on this machine, started by torch's elastic launcher (torchrun); the same --batch-size is split among them"
    ),
]
BadImages = Annotated[str, typer.Option(help="skip: leave unreadable images out (listed in bad_images.json); fail: stop at the first")]


def _launch(nproc: int) -> None:
    """Run this very command in ``nproc`` processes through torch.distributed.run, unless this is one of them already."""
    if nproc != 1 and not distributed.launched():
        args = iter(sys.argv[1:])  # without --nproc: the launcher's own parser would take it for --nproc-per-node
        raise typer.Exit(distributed.launch(nproc, [a for a in args if not (a.startswith("--nproc=") or a == "--nproc" and next(args))]))


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=Text(title), box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(
            LABELS.get(column, column.replace("_", " ")),
            justify="left"
            if column
            in (
                "strategy",
                "class",
                "path",
                "label",
                "name",
                "weights",
                "backbone",
                "layer",
                "description",
                "size",
                "classes",
                "source",
                "license",
            )
            else "right",
            overflow="fold",
        )
    for row in rows:  # cells as plain Text: a file or class named "[/x]" is a name, not rich markup
        table.add_row(*(Text(_format(column, row[column])) for column in columns))
    return table


def _format(column: str, value: Any) -> str:
    if column.endswith("_interval"):
        return f"{value[0]:.1%}-{value[1]:.1%}".replace("%-", "-")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if "accuracy" in column or column in ("precision", "recall", "f1", "probability", "similarity", "macro_f1"):
            return f"{value:.2%}"
        if column == "logme":
            return f"{value:.3f}"
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


@app.callback()
def _everywhere(
    compile: Annotated[
        str | None,
        typer.Option(help="auto (compile a forward pass predicted to take over 3 minutes), on or off; also GRAFT_COMPILE"),
    ] = None,
) -> None:
    """Options for every command, given before it: graft --compile off fit ..."""
    if compile is not None:
        os.environ["GRAFT_COMPILE"] = compile  # the environment reaches compare's spawned workers too
    compile_mode()  # an unknown value is an error now, not after the data scan


@app.command()
def fit(
    data: Data,
    classes: Classes = None,
    backbone: Backbone = DEFAULT_BACKBONE,
    strategy: Annotated[str, typer.Option(help=STRATEGY_HELP)] = "frozen",
    weights: Weights = None,
    layer: Layer = None,
    unfreeze: Unfreeze = None,
    freeze_first: FreezeFirst = None,
    out: Out = None,
    epochs: Epochs = None,
    lr: Lr = None,
    batch_size: Batch = None,
    augment: Augment = None,
    mix: Mix = None,
    head: Head = None,
    seed: Seed = None,
    workers: Workers = None,
    precision: Precision = None,
    per_class: PerClass = None,
    class_weight: ClassWeight = None,
    ema: Ema = None,
    image_size: ImageSize = None,
    layer_decay: LayerDecay = None,
    drop_path: DropPathRate = None,
    progressive: Progressive = None,
    batchnorm: BatchNorm = None,
    device: Device = None,
    tta: FitTta = None,
    nproc: Nproc = 1,
    overwrite: Overwrite = False,
    resume: Resume = False,
    bad_images: BadImages = "skip",
    report: Report = True,
    tensorboard: TensorBoard = False,
    as_json: Json = False,
) -> None:
    """Graft a new head onto a backbone and train it with one strategy."""
    config = FitConfig.create(
        data, classes=classes, backbone=backbone, strategy=strategy, weights=weights, layer=layer, unfreeze=unfreeze, freeze_first=freeze_first,
        epochs=epochs, lr=lr, batch_size=batch_size, augment=augment, mix=mix, head=head, seed=seed, workers=workers, precision=precision,
        per_class=per_class, class_weight=class_weight, ema=ema_setting(ema), image_size=image_size, layer_decay=layer_decay, drop_path=drop_path, progressive=progressive, batchnorm=batchnorm, device=device, bad_images=bad_images,
        tta=tta,
    )  # fmt: skip
    _launch(nproc)
    with _say_how_to_resume():
        run = api.fit(config, out=out, overwrite=overwrite, resume=resume, report=report, tensorboard=tensorboard)
    _print_fit("fit", run, as_json)


@app.command()
def resume(
    run: Annotated[Path, typer.Argument(help="a run directory holding checkpoint.safetensors")],
    device: Annotated[
        str | None, typer.Option(help="continue on this device instead of the one the run started on (auto, cpu, cuda, cuda:N, mps)")
    ] = None,
    nproc: Nproc = 1,
    as_json: Json = False,
) -> None:
    """Continue an interrupted fit from its last checkpoint, with the options that started it (in any number of processes)."""
    _launch(nproc)
    with _say_how_to_resume():
        resumed = api.resume(run, device)
    _print_fit("resume", resumed, as_json)


@contextmanager
def _say_how_to_resume() -> Iterator[None]:
    """Ctrl-C in training: print the one line that says how to continue, and exit 130.

    typer turns a KeyboardInterrupt into a silent exit 130 before :func:`main` could see it, so the
    message of :class:`Interrupted` is printed here.
    """
    try:
        yield
    except Interrupted as exc:
        stderr.print(escape(str(exc)))
        raise typer.Exit(130) from None


def _print_fit(command: str, run: api.Run, as_json: bool) -> None:
    if not distributed.is_main():  # one table for a run, whatever the number of processes
        return
    if as_json:
        _emit_json(run.result.to_dict())
    else:
        stdout.print(_table(f"graft {command} -> {run.path}", [run.result.to_dict()], COLUMNS))


@app.command()
def pretrain(
    data: Data,
    classes: Classes = None,
    out: Out = None,
    epochs: Epochs = None,
    lr: Lr = None,
    batch_size: Batch = None,
    augment: Augment = None,
    seed: Seed = None,
    workers: Workers = None,
    precision: Precision = None,
    device: Device = None,
    nproc: Nproc = 1,
    overwrite: Overwrite = False,
    as_json: Json = False,
) -> None:
    """Train graft's small CNN from scratch, to use later as a source model (--backbone RUN_DIR)."""
    from graft.experiments import PRETRAIN

    config = FitConfig.create(
        data, classes=classes, backbone="smallcnn", strategy="scratch", settings=PRETRAIN,
        epochs=epochs, lr=lr, batch_size=batch_size, augment=augment, seed=seed, workers=workers, precision=precision, device=device,
    )  # fmt: skip
    _launch(nproc)
    with _say_how_to_resume():
        run = api.fit(config, out=out, overwrite=overwrite)
    _print_fit("pretrain", run, as_json)


@app.command()
def compare(
    data: Data,
    classes: Classes = None,
    backbone: Backbone = DEFAULT_BACKBONE,
    strategies: Annotated[str, typer.Option(help=f"comma-separated: {STRATEGY_HELP}")] = "frozen,full,scratch",
    weights: Weights = None,
    layer: Layer = None,
    unfreeze: Unfreeze = None,
    freeze_first: FreezeFirst = None,
    out: Out = None,
    epochs: Epochs = None,
    lr: Lr = None,
    batch_size: Batch = None,
    augment: Augment = None,
    mix: Mix = None,
    head: Head = None,
    seed: Seed = None,
    workers: Workers = None,
    precision: Precision = None,
    per_class: PerClass = None,
    class_weight: ClassWeight = None,
    ema: Ema = None,
    image_size: ImageSize = None,
    layer_decay: LayerDecay = None,
    drop_path: DropPathRate = None,
    progressive: Progressive = None,
    batchnorm: BatchNorm = None,
    device: Device = None,
    tta: FitTta = None,
    overwrite: Overwrite = False,
    report: Report = True,
    tensorboard: TensorBoard = False,
    as_json: Json = False,
) -> None:
    """Run several strategies on the same split and print one table."""
    from graft.comparison import compare as run_compare

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    results = run_compare(
        data, names, out=out, overwrite=overwrite, report=report, tensorboard=tensorboard,
        classes=classes, backbone=backbone, weights=weights, layer=layer, unfreeze=unfreeze, freeze_first=freeze_first,
        epochs=epochs, lr=lr, batch_size=batch_size, augment=augment, mix=mix, head=head, seed=seed, workers=workers, precision=precision, per_class=per_class, class_weight=class_weight,
        ema=ema_setting(ema), image_size=image_size, layer_decay=layer_decay, drop_path=drop_path, progressive=progressive, batchnorm=batchnorm, device=device, tta=tta,
    )  # fmt: skip
    results, metric = ranked(results)
    rows = [r.to_dict() for r in results]
    if as_json:
        _emit_json(rows)
    else:
        stdout.print(_table(f"graft compare: {data} {classes or ''}, best {metric} first".replace(" ,", ","), rows, COLUMNS))


@app.command()
def auto(
    data: Data,
    time: Annotated[str, typer.Option("--time", help="the wall-clock budget, everything included: 90s, 15m, 1h30m, 2h")] = "15m",
    classes: Classes = None,
    backbones: Annotated[
        str | None,
        typer.Option(
            help="comma-separated candidates (timm names, smallcnn, graft run directories); default: the offline EfficientNet-Lite0/1/2"
        ),
    ] = None,
    per_class: PerClass = None,
    out: Out = None,
    seed: Seed = None,
    device: Device = None,
    overwrite: Overwrite = False,
    report: Report = True,
    as_json: Json = False,
) -> None:
    """The best model a time budget buys: backbones, strategies and epochs chosen on validation figures."""
    from graft.auto import auto as run_auto

    with _say_how_to_resume():
        result = run_auto(
            data, time, backbones=backbones, classes=classes, per_class=per_class, out=out, overwrite=overwrite, seed=seed or 0,
            device=device or "auto", report=report,
        )  # fmt: skip
    if as_json:
        _emit_json(result.to_dict())
        return
    rows = [{k: "-" if v is None else v for k, v in r.items()} for r in result.leaderboard]  # not run: no figure
    columns = ["name", "epochs", "val_accuracy", "val_balanced_accuracy", "test_accuracy", "seconds", "stopped"]
    stdout.print(_table(f"graft auto -> {result.run.path} ({result.seconds:,.0f} s of {result.budget:,.0f} s)", rows, columns))
    stdout.print(_table("the winner", [result.run.result.to_dict()], COLUMNS))


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="a run directory")],
    data: Data,
    classes: Classes = None,
    part: Annotated[str, typer.Option(help="auto (the run's test split if DATA is its data set), test or all")] = "auto",
    precision: Precision = None,
    device: Device = None,
    tta: RunTta = None,
    as_json: Json = False,
) -> None:
    """Accuracy, per-class precision/recall and the confusion matrix of a saved run."""
    result = run_evaluate(run, data, classes, part, precision=precision or "auto", device=device or "auto", tta=tta)
    if as_json:
        _emit_json(result.to_dict())
        return
    sc = result.scores
    stdout.print(Text(
        f"{result.run_dir}: accuracy {sc.accuracy:.2%} (95% {sc.accuracy_interval.low:.1%}-{sc.accuracy_interval.high:.1%}), "
        f"balanced accuracy {sc.balanced_accuracy:.2%}, macro F1 {sc.macro_f1:.2%}, loss {result.loss:.4f} on {sc.images} images ({result.part}, tta {result.tta})"
    ))  # fmt: skip
    rows = [{"class": c.name, "precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support} for c in sc.per_class]
    stdout.print(_table("per class", rows, ["class", "precision", "recall", "f1", "support"]))
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("")
    for name in result.classes:
        matrix.add_column(Text(name), justify="right")
    for name, row in zip(result.classes, result.confusion_matrix, strict=True):
        matrix.add_row(Text(name), *map(str, row))
    stdout.print(matrix)


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="a run directory")],
    paths: Annotated[list[Path] | None, typer.Argument(help="image files or folders")] = None,
    from_list: Annotated[
        Path | None, typer.Option("--from-list", help="a file with one image path a line ('-': stdin); relative to its folder")
    ] = None,
    top_k: Annotated[int, typer.Option(help="how many labels to list per image")] = 3,
    threshold: Annotated[float | None, typer.Option(help="flag images whose top probability is below this (column low_confidence)")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="table, csv or json (default: --output's suffix, else table)")] = None,
    output: Annotated[Path | None, typer.Option(help="write the csv or json to this file instead of stdout")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the same as --format json")] = False,
    precision: Precision = None,
    device: Device = None,
    tta: RunTta = None,
) -> None:
    """Label images with a saved run: a table, or CSV/JSON with the top-k labels and probabilities."""
    from graft.atomic import write_text
    from graft.predictions import output_format, read_list, to_csv, to_json

    fmt = output_format(fmt, output, as_json)
    inputs = [*(paths or []), *(read_list(from_list) if from_list is not None else [])]
    if not inputs:
        raise GraftError("no images given; name image files or folders, or pass --from-list FILE")
    rows = [p.to_dict() for p in run_predict(run, inputs, top_k, threshold, precision or "auto", device or "auto", tta)]
    if fmt == "table":
        columns = ["path", "label", "probability", *(["low_confidence"] if threshold is not None else [])]
        stdout.print(_table(f"graft predict ({run})", rows, columns))
        return
    text = to_csv(rows) if fmt == "csv" else to_json(rows)
    if output is None:
        sys.stdout.write(text)
    else:
        write_text(output, text)
        stderr.print(Text(f"{len(rows)} predictions -> {output}"))


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="a run, comparison or experiment directory")],
    tensorboard: TensorBoard = False,
) -> None:
    """Write report.html into a run, comparison or experiment directory: one page that opens offline."""
    from graft.report import tensorboard_events, write_report

    if tensorboard:
        for events in tensorboard_events(folder):
            stderr.print(Text(f"TensorBoard events: {events}"))
    stdout.print(Text(str(write_report(folder))))


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="a run directory")],
    fmt: Annotated[str, typer.Option("--format", help="onnx or torchscript")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="folder to write (default: RUN/export)")] = None,
    as_json: Json = False,
) -> None:
    """Write the run's model as ONNX or TorchScript, with preprocessing.json, to use without graft."""
    from graft.export import export as run_export

    written = run_export(run, fmt, out)
    if as_json:
        _emit_json(written)
    else:
        stdout.print(Text(f"{written['model']}\n{written['preprocessing']}"))


@app.command()
def experiment(
    name: Annotated[str, typer.Argument(help="split-digits, split-fashion or devanagari")],
    out: Out = None,
    device: Device = None,
    overwrite: Overwrite = False,
    as_json: Json = False,
) -> None:
    """Run a reference experiment end to end and print its comparison table."""
    from graft.experiments import EXPERIMENTS

    if name not in EXPERIMENTS:
        raise GraftError(f"unknown experiment '{name}'; choose from {', '.join(EXPERIMENTS)}")
    folder = out or Path("runs") / name
    result = EXPERIMENTS[name](folder, overwrite, device or "auto")
    from graft.report import after_experiment

    after_experiment(folder)
    if as_json:
        _emit_json(result)
        return
    source = result["source"]
    stdout.print(
        Text(
            f"source model: {source['test_accuracy']:.2%} test accuracy, {source['train_seconds']:.0f}s, {source['epochs']} epochs -> {source['run_dir']}"
        )
    )
    stdout.print(_table(f"graft experiment {name}", result["target"], result.get("columns", COLUMNS)))


@app.command()
def advise(
    data: Data,
    backbones: Annotated[str, typer.Option(help="comma-separated candidates: timm model names, smallcnn, graft run directories")],
    classes: Classes = None,
    max_images: Annotated[int, typer.Option(help="training images sampled (stratified) to score the candidates")] = 1000,
    seed: Seed = None,
    device: Device = None,
    run: Annotated[bool, typer.Option("--run", help="then train the recommendation (graft fit)")] = False,
    as_json: Json = False,
) -> None:
    """Score backbones and cut points on your images (LogME, linear probe) and recommend what to train."""
    from graft.advice import advise as run_advise
    from graft.advice import fit_command, run_recommendation

    names = [b.strip() for b in backbones.split(",") if b.strip()]
    advice = run_advise(data, names, classes=classes, max_images=max_images, seed=seed or 0, device=device or "auto")
    result = advice.to_dict()
    if run:
        result["run"] = run_recommendation(advice, seed=seed or 0, device=device or "auto").result.to_dict()
    if as_json:
        _emit_json(result)
        return
    sizes = result["data"]
    stdout.print(
        Text(
            f"{data}: {sizes['images']:,} images in {len(sizes['classes'])} classes; scored on {sizes['sampled_images']:,} of {sizes['train_images']:,} training images"
        )
    )
    stdout.print(_table("images per class", [{"class": c, "images": n} for c, n in sizes["images_per_class"].items()], ["class", "images"]))
    rows = [{**r, "layer": "output" if r["layer"] is None else f"layer {r['layer']}", "logme": r["score"]} for r in result["candidates"]]
    uneven = sizes["probe_metric"] == "balanced accuracy"
    probe = "probe balanced accuracy" if uneven else "probe accuracy"
    rows = [{**r, probe: r["probe_accuracy"]} for r in rows]
    title = "candidates (LogME: higher is better" + ("; the classes are uneven, so the probe scores balanced accuracy)" if uneven else ")")
    stdout.print(_table(title, rows, ["backbone", "layer", "dims", "logme", probe]))
    stdout.print(
        _table(
            "similarity to the source (output layer's share of the best cut's probe accuracy)",
            [{"backbone": k, "similarity": "random weights, no source" if v is None else v} for k, v in result["similarity"].items()],
            ["backbone", "similarity"],
        )
    )
    rec = result["recommendation"]
    stdout.print(f"[bold]recommendation[/]: {escape(' '.join(fit_command(advice)))}")
    stdout.print(f"why: {escape(rec['reason'])}")
    stdout.print(f"how sure: {escape(rec['confidence']['summary'])}")
    if run:
        stdout.print(_table(f"graft fit -> {result['run']['run_dir']}", [result["run"]], COLUMNS))


@app.command()
def datasets() -> None:
    """The built-in data sets, where they come from and their licences."""
    from graft.data.builtin import BUILTIN

    columns = ["name", "description", "size", "classes", "source", "license"]
    stdout.print(_table("built-in data sets", [{c: getattr(d, c) for c in columns} for d in BUILTIN.values()], columns))


@app.command()
def backbones(
    pretrained_only: Annotated[bool, typer.Option("--pretrained-only", help="only backbones with pretrained weights to be had")] = False,
    as_json: Json = False,
) -> None:
    """What can be used as --backbone, and where its weights come from (offline first)."""
    from graft.backbones.catalog import list_backbones

    rows = list_backbones(pretrained_only)
    if as_json:
        _emit_json(rows)
        return
    stdout.print(_table("backbones (any timm name; a graft run directory works too)", rows, ["name", "weights"]))


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except GraftError as exc:
        if distributed.speaks(exc):
            stderr.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
