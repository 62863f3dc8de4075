"""A trained run as a model that needs no graft: ONNX or TorchScript, with its preprocessing as JSON.

The exported network takes a float32 batch ``(N, C, H, W)`` of normalised pixels and returns logits; the
batch size is free. ``preprocessing.json`` says how to make that batch from an image file (colour mode,
resize, centre crop, scaling, mean/std) and names the classes in logit order, so any language with an
image library and ONNX Runtime can use the model.

Test-time augmentation (:mod:`graft.tta`) is not in the exported network: it returns the logits of the
image as given. ``preprocessing.json``'s ``tta`` says what graft predicts with; where it is ``flip``, its
last step says how to repeat it (run the image and its mirror, average the two softmax outputs).
"""

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from graft.atomic import write_json
from graft.errors import GraftError
from graft.rundir import load_run

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
PREPROCESSING = "preprocessing.json"
INPUT, OUTPUT = "image", "logits"
EXPORT_DIR = "export"


def preprocessing_spec(config: dict[str, Any]) -> dict[str, Any]:
    """The steps that turn an image file into the model's input, exactly as graft's own transform does them.

    These mirror :func:`graft.data.transforms.build_transform` without augmentation: torchvision's
    ``Resize(int)`` scales the *shorter* side, then a centre crop cuts the input size out of it.
    """
    pre = config["preprocessing"]
    channels, height, width = (int(v) for v in pre["input_size"])
    resize = round(max(height, width) / float(pre.get("crop_pct", 1.0)))
    tta = config.get("tta", "none")
    flip = [
        "graft predicts with tta 'flip': run the batch mirrored left-right too (reverse the W axis) and average the two softmax outputs"
    ]
    return {
        "classes": list(config["classes"]),
        "input_name": INPUT,
        "output_name": OUTPUT,
        "input_layout": "NCHW",
        "input_dtype": "float32",
        "color_mode": "L" if channels == 1 else "RGB",
        "input_size": [channels, height, width],
        "resize_shorter_side": resize,
        "interpolation": pre.get("interpolation", "bilinear"),
        "antialias": True,
        "center_crop": [height, width],
        "crop_pct": float(pre.get("crop_pct", 1.0)),
        "scale": 1 / 255,
        "mean": [float(v) for v in pre["mean"]],
        "std": [float(v) for v in pre["std"]],
        "tta": tta,  # the test-time augmentation graft predicts with (graft.tta); not part of the exported network
        "steps": [
            "decode the image, apply its EXIF orientation, convert to color_mode (transparent pixels onto white)",
            f"resize so the shorter side is {resize} pixels ({pre.get('interpolation', 'bilinear')}, antialiased)",
            f"centre-crop {height}x{width} (height x width)",
            "scale pixel values to [0, 1] (divide by 255), then per channel subtract mean and divide by std",
            f"stack as float32 {{N, {channels}, {height}, {width}}}; the output is logits, softmax gives class probabilities",
            *(flip if tta == "flip" else []),
        ],
    }


def to_onnx(model: torch.nn.Module, example: torch.Tensor, target: Path) -> None:
    """torch.export-based ONNX export (``dynamo=True``): the supported exporter; the batch dimension is dynamic."""
    batch = torch.export.Dim("batch", min=1)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports its steps on stdout, which is for results
        program = torch.onnx.export(
            model, (example,), input_names=[INPUT], output_names=[OUTPUT], dynamic_shapes=({0: batch},), dynamo=True, verbose=False
        )
    program.save(str(target))


def to_torchscript(model: torch.nn.Module, example: torch.Tensor, target: Path) -> None:
    """A traced TorchScript module: loadable with ``torch.jit.load`` from Python or C++ (libtorch), no graft."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated", category=DeprecationWarning)
        traced = torch.jit.trace(model, example)
    traced.save(str(target))


EXPORTERS = {"onnx": to_onnx, "torchscript": to_torchscript}


def export(run_dir: Path, fmt: str = "onnx", out: Path | None = None) -> dict[str, Any]:
    """Write the run's model in ``fmt`` and ``preprocessing.json`` into ``out`` (default ``RUN/export``)."""
    if fmt not in EXPORTERS:
        raise GraftError(f"unknown export format '{fmt}'; choose one of {', '.join(EXPORTERS)}")
    run = load_run(Path(run_dir))
    out = Path(out) if out is not None else Path(run_dir) / EXPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    spec = preprocessing_spec(run.config)
    example = torch.zeros(2, *spec["input_size"])  # batch 2: a batch of 1 would let the tracer specialise it away
    target = out / FORMATS[fmt]
    model = run.model.eval()
    with torch.no_grad():
        try:
            EXPORTERS[fmt](model, example, target)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise GraftError(f"cannot export {run_dir} as {fmt}: {type(exc).__name__}: {first}; try the other format") from exc
    write_json(out / PREPROCESSING, spec)  # the same for every format, so exporting both shares one file
    return {"run_dir": str(run_dir), "format": fmt, "model": str(target), "preprocessing": str(out / PREPROCESSING)}
