"""Several processes, one run: torch.distributed, set up from the environment torch's launcher gives.

graft starts no process and runs no collective of its own. ``graft fit ... --nproc N`` hands its own
command line to torch's elastic launcher (:mod:`torch.distributed.run`, the code behind ``torchrun``),
which starts N copies of ``python -m graft`` on this machine; ``torchrun --nnodes M --nproc-per-node N
-m graft fit ...`` does the same across machines. Each copy finds RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR... in its environment and joins the group (:func:`process_group`): gloo on the CPU, NCCL on
CUDA (process LOCAL_RANK on ``cuda:LOCAL_RANK``). Rank 0 alone writes the run directory; the helpers
here are the few points where ranks meet: :func:`on_main` (rank 0 decides, every rank learns),
:func:`gather_rows` (every image of an evaluation counted once), :func:`mean`, :func:`barrier`.

Outside a process group every helper is the one-process identity, so the code that calls them has one
path, and a run with one process is exactly what it was before.
"""

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from graft import console
from graft.device import check_device
from graft.errors import GraftError
from graft.interrupt import requested

LAUNCHED_BY_GRAFT = "GRAFT_NPROC"  # set by launch(): the launcher, not rank 0, explains a process that died
LOST = 3  # the exit code of a process that lost contact with another: the launcher names the one that failed
T = TypeVar("T")


class LostProcess(GraftError):
    """A collective failed because another process of the run is gone (crashed, killed)."""

    exit_code = LOST


def speaks(error: GraftError) -> bool:
    """Whether this process should print ``error``: not a lost peer under graft's launcher, which says what happened."""
    return not (isinstance(error, LostProcess) and LAUNCHED_BY_GRAFT in os.environ)


S = TypeVar("S", bound=Sequence)


def active() -> bool:
    """Whether this process is one of a torch.distributed group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or a process on its own): the one that writes files and talks to the user.

    After the group is left, the launcher's RANK still says which process this was (its result is printed once).
    """
    return rank() == 0 if active() else os.environ.get("RANK", "0") == "0"


def launched() -> bool:
    """Whether torch's launcher started this process (its environment names a world of processes)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def process_group(device: str) -> Iterator[None]:
    """Join the group torch's launcher described for the body (``init_process_group`` from the environment).

    Nothing happens outside the launcher, for a world of one, or when the caller has joined a group
    already (a user's own script); a group joined here is left when the body ends. Torch threads per
    process: ``OMP_NUM_THREADS`` if set (torchrun sets 1 unless told), else the cores over the processes
    on this machine, so N processes do not fight over the same cores.
    """
    if active() or not launched() or int(os.environ["WORLD_SIZE"]) <= 1:
        yield
        return
    where = check_device(device)
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if where.type == "mps":
        raise GraftError(
            "several processes cannot share Apple MPS (torch.distributed has no MPS backend); use --device cpu, or one process"
        )
    if where.type == "cuda":
        if where.index is not None and local_world > 1:
            raise GraftError(f"--device {device} with {local_world} processes a machine: give --device cuda (process N takes cuda:N)")
        torch.cuda.set_device(where.index if where.index is not None else local_rank)
    threads = os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(int(threads) if threads and threads.isdigit() else max(1, cores() // local_world))
    if where.type == "cuda":  # bound to its GPU from the start, so that NCCL's barriers know where they run
        dist.init_process_group("nccl", device_id=torch.device("cuda", torch.cuda.current_device()))
    else:
        dist.init_process_group("gloo")
    if not is_main():  # rank 0 speaks for the run: its lines, its table, its one-line error
        console.stderr.quiet = console.stdout.quiet = True
    try:
        yield
    except Exception as exc:
        if isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and any(n in str(exc) for n in ("gloo", "NCCL"))):
            first = str(exc).strip().splitlines()[0]
            raise LostProcess(
                f"lost contact with another process of this run ({first}); graft resume continues from the last finished epoch"
            ) from exc
        raise
    finally:
        dist.destroy_process_group()


def _here() -> torch.device:
    """Where this group's collectives take tensors: the process's GPU under NCCL, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if active():
        dist.barrier()


def on_main(compute: Callable[[], T]) -> T:
    """``compute()`` run on rank 0 alone, its result sent to every rank (pickled: keep it small).

    What only rank 0 may do (read or write the run directory, which other machines may not have) or
    must do once (a solver whose result every rank must share bit for bit). When rank 0 fails, every
    other rank fails with the same :class:`GraftError` (silently: rank 0 says it), instead of waiting
    forever for a result that will not come.
    """
    if not active():
        return compute()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", compute())
        except BaseException as exc:
            dist.broadcast_object_list([("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise GraftError(f"process 0 stopped: {value}")
    return value


def shard(items: S) -> S:
    """This rank's contiguous slice of ``items``, none shared, none padded: concatenated in rank order they are ``items``.

    For evaluation, where every image must count exactly once (torch's DistributedSampler pads a short
    last shard with repeated images, which is right for training only).
    """
    size, index = world_size(), rank()
    return items[len(items) * index // size : len(items) * (index + 1) // size]  # type: ignore[return-value]


def gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's ``tensors`` (rows of one evaluation over :func:`shard`), concatenated in rank order."""
    if not active():
        return tensors
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, [t.cpu() for t in tensors])
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def mean(*values: float) -> list[float]:
    """Each of ``values`` averaged over the ranks (per-rank epoch figures over equal shards)."""
    if not active():
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=_here())
    dist.all_reduce(total)
    return (total / world_size()).tolist()


def local_batch(batch_size: int) -> int:
    """Each rank's share of a global ``batch_size``: the same --batch-size is the same step, whatever the process count."""
    return max(1, batch_size // world_size())


def sampler(dataset: Dataset, seed: int) -> DistributedSampler | None:
    """The training shuffle across ranks: torch's DistributedSampler seeded with ``seed``; None for one process.

    Its order each epoch comes from ``set_epoch`` (:func:`graft.train.trainer.reshuffle`, fed the
    trainer's per-epoch seed), so a resumed run repeats the order the uninterrupted one had.
    """
    return DistributedSampler(dataset, shuffle=True, seed=seed) if active() else None


def wrap(module: nn.Module) -> nn.Module:
    """``module`` in torch's DistributedDataParallel (gradients averaged over the ranks at each step); itself for one process.

    Built per phase, after freezing: DDP reduces the gradients of the parameters that need one when it is made.
    """
    if not active():
        return module
    device = next(module.parameters()).device
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def check_interrupt() -> None:
    """Ctrl-C between training steps, agreed by every rank (one small all-reduce) so all stop at the same step.

    Alone, :func:`graft.interrupt.check`. Together, a rank that stopped on its own would leave the others
    waiting in their next gradient all-reduce.
    """
    stop = requested()
    if active():
        flag = torch.tensor([int(stop)], device=_here())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop = bool(flag.item())
    if stop:
        raise KeyboardInterrupt


def launch(nproc: int, args: list[str]) -> int:
    """Run ``python -m graft ARGS`` in ``nproc`` processes on this machine through torch's elastic launcher; their exit code.

    ``torchrun --standalone --nproc-per-node N -m graft ARGS``, called in this process. The launcher
    stops every process when one fails or when Ctrl-C reaches it (it passes the signal on: each rank
    stops at the same step, rank 0 says how to resume). Rank 0 has printed its own line for an error
    (exit 2) or an interrupt (130); any other failure gets one line here.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if not 1 <= nproc <= 1024:
        raise GraftError(f"--nproc {nproc} is out of range; give 1 or more processes")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores() // nproc)))  # else torchrun gives each process 1 thread
    os.environ[LAUNCHED_BY_GRAFT] = str(nproc)
    for name in list(logging.root.manager.loggerDict):  # the launcher's notices: the one line below says it
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "graft", *args]))
    except ChildFailedError as exc:
        first = exc.failures.get(0)
        if first is not None and first.exitcode in (GraftError.exit_code, 130):
            return first.exitcode  # rank 0 said what went wrong, in its one line
        failed, failure = min(exc.failures.items(), key=lambda item: (item[1].exitcode == LOST, item[1].timestamp))
        how = f"exit code {failure.exitcode}" if failure.exitcode >= 0 else f"signal {failure.signal_name()}"
        error = GraftError(
            f"process {failed} of {nproc} stopped ({how}); the launcher stopped the others; graft resume continues from the last finished epoch"
        )
        error.exit_code = 1
        raise error from None
    except SignalException:
        return 130
    return 0
