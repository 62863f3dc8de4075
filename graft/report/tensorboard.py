"""A run's per-epoch metrics in TensorBoard's event format, for people who keep their runs there.

Written from ``metrics.jsonl`` once the run is saved, so the trainer needs no TensorBoard code and an
old run can be converted later (``graft report RUN --tensorboard``).
"""

from pathlib import Path

from graft.report.metrics import read_metrics

TENSORBOARD_DIR = "tensorboard"


def write_tensorboard(run_dir: Path) -> Path:
    """Scalars ``loss/train``, ``loss/val``, ``accuracy/train``, ``accuracy/val`` and ``seconds/epoch``.

    The step is the epoch counted across phases, as in the report's learning curves. Point TensorBoard at
    a comparison folder and each strategy's run shows up as its own line.
    """
    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard itself: only when asked for

    log_dir = Path(run_dir) / TENSORBOARD_DIR
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for step, record in enumerate(read_metrics(run_dir), start=1):
            for metric in ("loss", "accuracy"):
                for part in ("train", "val"):
                    writer.add_scalar(f"{metric}/{part}", record[f"{part}_{metric}"], step)
            writer.add_scalar("seconds/epoch", record["seconds"], step)
    return log_dir
