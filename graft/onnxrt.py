"""An ONNX Runtime copy of a network for one forward pass, on CPUs that compute in fp32.

Why: where the CPU has no native bf16 (AVX2-only x86, most laptops and older servers), graft's passes run
in fp32, and there ONNX Runtime's CPU kernels are much faster than eager PyTorch's: on a 2-core AVX2 EPYC
``make bench`` measured EfficientNet-Lite0 at 3.8x and resnet50 at 2.3x eager fp32 (docs/speed.md), where
``torch.compile`` gained 2.2x and 1.7x. ONNX Runtime computes in fp32 too, so its outputs are eager fp32's
to rounding (a cosine of 1.0000; tested), and nothing a user sees changes but the time.

How: the network is traced to ONNX in memory on two images (torch's TorchScript-based exporter; with the
loading, 1.2 s for lite0 and 2 s for resnet50 on two cores, where the ``torch.export`` one takes far
longer, and a pass must repay its copy) with a free batch dimension, and loaded into an
``InferenceSession`` on the CPU execution provider with as many threads as torch uses (so ``--nproc`` and
``OMP_NUM_THREADS`` share the cores as they do for torch). :mod:`graft.inference` decides when a pass
builds one and keeps it only where it measures faster than eager.
"""

import contextlib
import importlib
import io
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from graft.console import quiet_torch_notices

INPUT = "images"


def available() -> bool:
    """Whether ONNX Runtime can be imported (a dependency of graft; a broken install leaves eager torch)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _no_graph_dump() -> Iterator[None]:
    """Keeps torch's exporter from printing a network's whole graph to stdout when an operator fails.

    Its logging switch tests the function ``_jit_is_onnx_log_enabled`` rather than its result, so every
    export turns the C++ log on, and a failure then writes the graph to stdout: pages of text, where stdout
    may be ``--json``'s. The failure itself still raises, and :mod:`graft.inference` says it in one line.
    """
    try:
        utils = importlib.import_module("torch.onnx._internal.torchscript_exporter.utils")
    except ImportError:
        utils = None
    original = getattr(utils, "setup_onnx_logging", None)
    if original is None:  # another torch: its exporter is left as it is
        yield
        return
    utils.setup_onnx_logging = lambda verbose: contextlib.nullcontext()
    try:
        yield
    finally:
        utils.setup_onnx_logging = original


def session(module: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` (in eval mode, on the CPU) as a function of a float32 batch, run by ONNX Runtime.

    ``example`` fixes every dimension but the batch; its first two images are traced. The function returns
    a float32 tensor of the module's output (a single tensor: a backbone's features or a classifier's logits).
    """
    import onnxruntime as ort

    buffer = io.BytesIO()
    with (
        torch.inference_mode(False),
        torch.no_grad(),
        torch.autocast("cpu", enabled=False),
        warnings.catch_warnings(),
        quiet_torch_notices(),
        _no_graph_dump(),
    ):
        warnings.simplefilter("ignore")  # the exporter's notes on tracing (constant shapes, deprecations) are not the user's concern
        # Traced on two images: tracing runs the network once (a whole batch would cost its eager time), and a
        # batch of one could specialise a squeeze() to it.
        torch.onnx.export(
            module, (example[:2].float().clone(),), buffer, input_names=[INPUT], dynamic_axes={INPUT: {0: "batch"}}, dynamo=False
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its notes on unused initialisers are not the user's concern
    runner = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        (outputs,) = runner.run(None, {INPUT: x.float().contiguous().numpy()})
        return torch.from_numpy(outputs)

    return run
