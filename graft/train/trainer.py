"""The trainer: runs a strategy's phases on a split, with early stopping and per-epoch metrics.

It knows nothing about particular strategies. For each phase it freezes every parameter outside the
phase's groups, keeps frozen BatchNorm layers in inference mode, and, when the training images are
neither augmented nor mixed, runs the frozen part once per image: the whole backbone when it is frozen (the
head trains on cached features), its frozen first blocks when only the last ones train
(:mod:`graft.backbones.prefix`).
"""

import copy
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from graft import distributed, features
from graft.atomic import append_line, write_text
from graft.backbones.droppath import set_drop_path
from graft.backbones.prefix import frozen_blocks, split_frozen_prefix
from graft.console import track
from graft.data.decoded import DecodedImages
from graft.data.loader import make_loader
from graft.data.split import Split
from graft.device import module_device, pin_memory, resolve_device
from graft.errors import GraftError
from graft.heap import freed_memory_kept
from graft.inference import FrozenForward, floating, forward_all, grad_scaler, prepare
from graft.interrupt import deferred_interrupts
from graft.metrics import is_imbalanced
from graft.model import GraftModel, PrefixFed
from graft.strategies.base import Phase, Strategy
from graft.train.adjustment import choose_strength, fold_into, log_prior
from graft.train.checkpoint import save_checkpoint
from graft.train.loop import EpochStats, evaluate_logits, train_epoch
from graft.train.mixing import mixed, mixer
from graft.train.optim import adamw, load_state
from graft.train.recipe import Score, WeightAverage, ema_decay, resize_input, score, selection_metric
from graft.train.resolution import accepts, epoch_sides, shrunk
from graft.train.settings import TrainSettings
from graft.train.solver import class_weights, copy_into, fit_linear_head

MIN_SCHEDULE_STEPS = 20


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels: same seed, same run on CPU.

    On CUDA, cuBLAS is deterministic only with a fixed workspace, set before its first call (torch's
    reproducibility notes); the variable is set here unless the user set one.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def apply_freezing(model: GraftModel, phase: Phase, keep: Collection[nn.Module] = ()) -> None:
    """Make exactly the phase's parameters trainable; put layers with nothing to train in eval mode.

    Frozen BatchNorm layers must not update their running statistics (Keras' ``training=False``), and
    frozen dropout must not drop: any backbone stage, and any BatchNorm layer, with no trainable
    parameter runs in inference mode while the rest of the model trains. BatchNorm layers in ``keep``
    (:func:`pretrained_batchnorms`, under ``--batchnorm frozen``) stay in inference mode even where they train.
    """
    trainable = {id(p) for g in phase.groups for p in g["params"]}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    model.train()
    for stage in model.backbone.blocks():
        if not any(p.requires_grad for p in stage.parameters()):
            stage.eval()
    kept = {id(m) for m in keep}
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
            id(module) in kept or not any(p.requires_grad for p in module.parameters())
        ):
            module.eval()


def pretrained_batchnorms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers whose running statistics were learnt (not the initial zero mean and unit variance).

    ``--batchnorm frozen`` keeps these in inference mode while their layers train: a few hundred images far
    from the source data give batch statistics unlike the running ones every later layer was trained on
    (Keras' fine-tuning guide runs the base model with ``training=False`` for this reason), and a head
    fitted on the frozen features (LP-FT's probe) would meet different features from the first step. Layers
    with initial statistics (a network trained from scratch, random weights) have nothing to keep, so
    they normalise by their batches as usual. Asked once, before training and before a checkpoint is loaded.
    """
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.running_mean is not None
        and not (bool((m.running_mean == 0).all()) and bool((m.running_var == 1).all()))
    ]


@dataclass
class TrainResult:
    """What training did: epochs run, seconds spent, parameters trained, and one record per epoch."""

    epochs: int
    train_seconds: float
    trainable_params: int = 0  # parameters trained in at least one phase
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: bool = False  # ended early by the ``stop`` hook (a time budget), keeping the best state so far
    logit_adjustment: float = 0.0  # tau of graft.train.adjustment folded into the head (0: none)


class TimeUp(Exception):
    """Raised between batches when the trainer's ``stop`` hook says so; :meth:`Trainer.fit` ends cleanly on it."""


@dataclass
class Progress:
    """Where training stands: all a checkpoint needs, beside the model, optimizer, scheduler and RNGs."""

    phase: int = 0  # index into the strategy's phases
    epoch: int = 0  # epochs finished in that phase
    best: dict[str, Any] | None = None  # the phase's best validation score so far: epoch, of (weights | ema), metric, loss
    best_state: dict[str, torch.Tensor] | None = None
    stale: int = 0  # epochs since the best validation score last improved
    seconds: float = 0.0  # training time before this process (a resumed run adds its earlier time)
    history: list[dict[str, Any]] = field(default_factory=list)

    def next_phase(self) -> None:
        self.phase, self.epoch, self.best, self.best_state, self.stale = self.phase + 1, 0, None, None, 0


def rng_states() -> dict[str, Any]:
    """Every generator a run draws from; CUDA's (dropout on the GPU) once the run has used CUDA."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    return {**states, "cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_initialized() else states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore :func:`rng_states`; CUDA's only where this machine has as many GPUs (a CPU resume has none to seed)."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def misfit(exc: Exception) -> GraftError:
    """A checkpoint whose contents do not fit the model or optimizer the run's arguments build."""
    return GraftError(
        f"the checkpoint does not fit this run ({(str(exc).strip() or type(exc).__name__).splitlines()[0]}); start the run again"
    )


def epoch_seed(seed: int, phase: int, epoch: int) -> int:
    """The shuffle seed of one epoch: a function of where training is, not of how it got there.

    A long-lived shuffle generator would have to be saved and restored mid-stream; deriving each
    epoch's order from ``(seed, phase, epoch)`` makes a resumed epoch see exactly the batches the
    uninterrupted run saw.
    """
    return int(np.random.SeedSequence([seed, phase, epoch]).generate_state(1)[0])


def reshuffle(loader: DataLoader, seed: int) -> None:
    """Seed ``loader``'s order for the coming epoch (the distributed sampler's, or its generator's) and its workers' seeds."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(seed)
    if loader.generator is not None:
        loader.generator.manual_seed(seed)


class Trainer:
    """Fits a model with a strategy; writes one JSON line per epoch to ``metrics_path`` if given.

    With ``checkpoint_path`` it saves everything needed to continue after every epoch (with ``config``,
    the run description that started it, so ``graft resume`` can repeat it); ``fit(..., resume=state)``
    continues from such a checkpoint and ends with the same weights as a run that was never stopped.
    The model trains on ``settings.device`` (:mod:`graft.device`) and stays there afterwards. ``stop``, asked
    before every batch, ends training early when it returns True (``graft auto``'s clock): the model keeps
    the phase's best state so far, and the result says it stopped.
    """

    def __init__(
        self,
        settings: TrainSettings,
        metrics_path: Path | None = None,
        log: Callable[[str], None] | None = None,
        checkpoint_path: Path | None = None,
        config: dict[str, Any] | None = None,
        stop: Callable[[], bool] | None = None,
    ):
        self.settings = settings
        self.stop = stop
        self.metrics_path = metrics_path
        self.log = log or (lambda message: None)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        self.class_weight: str | None = None  # "balanced" where class_weight asks for a weighted loss
        self.adjusting = False  # a logit adjustment after training: auto, on uneven classes (graft.train.adjustment)
        self._last: tuple[nn.Module, DataLoader] | None = None  # the last phase run's module and validation batches
        self.metric = "accuracy"  # the validation metric that picks the epoch kept (graft.train.recipe)
        self.checkpoint_path = checkpoint_path
        self.config = config or {}

    def fit(self, model: GraftModel, strategy: Strategy, split: Split, resume: dict[str, Any] | None = None) -> TrainResult:
        start = time.perf_counter()
        device = resolve_device(self.settings.device)
        self._weigh_classes(split, len(split.classes))
        self.metric = selection_metric([y for _, y in split.train], len(split.classes))
        self.loss_fn.to(device)  # its class weights meet the logits there
        strategy.prepare(model)  # first: scratch replaces the backbone, whose new weights must move and need the layout too
        resize_input(model.backbone, self.settings.image_size)  # after prepare: scratch's new backbone has the default size
        self._drop_paths(model)
        model.to(device)  # before the optimizer is built: it keeps state beside each parameter, on its device
        prepare(model)  # channels-last weights before the optimizer sees them (graft.inference)
        phases = strategy.phases(model, self.settings)
        self._kept_norms = pretrained_batchnorms(model) if self.settings.batchnorm == "frozen" else []  # before a checkpoint loads
        trained = {id(p): p.numel() for phase in phases for g in phase.groups for p in g["params"]}
        self._phase_names = [phase.name for phase in phases]
        self._decoded = DecodedImages()  # images decoded once for the whole run, every phase (graft.data.decoded)
        progress = Progress()
        if resume is not None:
            progress = self._restore(model, resume, phases)
        stopped = False
        with deferred_interrupts(), freed_memory_kept():  # Ctrl-C stops between batches (graft.interrupt); graft.heap
            try:
                while progress.phase < len(phases):
                    self._run_phase(model, phases[progress.phase], split, strategy.name, progress, resume, start)
                    resume = None  # the optimizer and scheduler state belong to the checkpoint's phase only
                    progress.next_phase()
            except TimeUp:
                stopped = True
                if progress.best_state is not None:
                    model.load_state_dict(progress.best_state)
                self.log(f"{strategy.name}: time is up; training stops with the best state so far")
            adjustment = self._adjust(model, split, phases[-1]) if self.adjusting else 0.0
        model.eval()
        history = progress.history
        seconds = progress.seconds + time.perf_counter() - start
        return TrainResult(len(history), seconds, sum(trained.values()), history, stopped, adjustment)

    def _drop_paths(self, model: GraftModel) -> None:
        """Stochastic depth in the backbone's residual blocks where ``drop_path`` asks for it, said in one line."""
        if rate := self.settings.drop_path:
            blocks = set_drop_path(model.backbone, rate)
            self.log(
                f"stochastic depth in {blocks} residual blocks, up to {rate:g} in the last"
                if blocks
                else "--drop-path does nothing here: the backbone has no residual blocks that timm gives stochastic depth"
            )

    def _until_stopped(self, batches: Any) -> Any:
        """``batches``, raising :class:`TimeUp` before the next one once ``stop`` says so."""
        for batch in batches:
            if self.stop is not None and self.stop():
                raise TimeUp
            yield batch

    def _weigh_classes(self, split: Split, num_classes: int) -> None:
        """Class-weighted loss (each class weighing as much in total) where ``class_weight`` is ``balanced``;
        under ``auto``, where the training part's classes are uneven (:func:`graft.metrics.is_imbalanced`), an
        unweighted loss and a logit adjustment after training (:mod:`graft.train.adjustment`), said in one line:
        unweighted, a model gains accuracy by favouring the large classes, and the minority's recall is what pays.
        """
        labels = torch.tensor([y for _, y in split.train])
        counts = torch.bincount(labels, minlength=num_classes)
        mode = self.settings.class_weight
        self.adjusting = mode == "auto" and is_imbalanced(counts.tolist())
        if self.adjusting:
            self.log(
                f"classes are uneven ({int(counts.max())} to {int(counts.min())} training images): the decisions will be "
                "moved towards the rare classes by as much as scores best on validation; --class-weight none turns it off"
            )
        self.class_weight = "balanced" if mode == "balanced" else None
        weight = class_weights(labels, num_classes, self.class_weight)
        self.loss_fn = nn.CrossEntropyLoss(weight=None if weight is None else weight.float(), label_smoothing=self.settings.label_smoothing)

    def _restore(self, model: GraftModel, state: dict[str, Any], phases: list[Phase]) -> Progress:
        """Model weights, RNG states and progress from a checkpoint; metrics.jsonl rewritten to match it."""
        names = [phase.name for phase in phases]
        if state.get("phases") != names:
            raise GraftError(f"the checkpoint was made with phases {state.get('phases')}, this strategy has {names}; start the run again")
        try:
            model.load_state_dict(state["model"])
            set_rng_states(state["rng"])
            progress = Progress(**state["progress"])
            if not 0 <= progress.phase < len(names):
                raise ValueError(f"phase {progress.phase} of {len(names)}")
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise misfit(exc) from exc
        self.log(f"resuming {names[progress.phase]} phase after epoch {progress.epoch} ({len(progress.history)} epochs done)")
        if self.metrics_path is not None:  # a crash between checkpoint and metrics line must not leave a gap
            write_text(self.metrics_path, "".join(json.dumps(record) + "\n" for record in progress.history))
        return progress

    def _loaders(self, model: GraftModel, split: Split, phase: Phase) -> tuple[nn.Module, DataLoader, DataLoader, list[int] | None]:
        """The module to step, its train/val batches, and the side each epoch's training images are shrunk to under
        progressive resizing (``None``: as they come): the head on cached features, or the whole model."""
        s, pre, root = self.settings, model.backbone.preprocessing, Path(split.root)
        pinned = pin_memory(module_device(model))
        apply_freezing(model, phase, self._kept_norms)
        if not model.backbone_trains() and (not s.varies_inputs or phase.cached):
            cache = features.FeatureCache(model.backbone, s.precision)
            # one pass over both: one prediction of its length, so at most one int8 copy built (graft.inference)
            parts = _train_and_val(*cache.features(root, [*split.train, *split.val], s.batch_size, s.workers), len(split.train))
            self.log(f"backbone features: {cache.hits} images from the cache, {cache.misses} computed ({cache.folder})")
            return model.head, *self._tensor_loaders(parts, pinned), None
        if not s.varies_inputs and (fed := self._prefix_fed(model, split, pinned)) is not None:
            return *fed, None
        train = make_loader(
            root,
            split.train,
            pre,
            batch_size=distributed.local_batch(s.batch_size),  # the same --batch-size is the same global step
            augment=s.augment,
            shuffle=True,
            seed=s.seed,
            workers=s.workers,
            pin_memory=pinned,
            store=self._decoded,
        )
        val = make_loader(
            root, distributed.shard(split.val), pre, batch_size=s.batch_size, workers=s.workers, pin_memory=pinned, store=self._decoded
        )
        if line := self._decoded.summary():
            self.log(line)
        sides = self._epoch_sides(model, phase)
        each = sides or [model.backbone.preprocessing.input_size[-1]] * phase.epochs
        steps = {side: epochs * len(train) for side, epochs in Counter(each).items()}  # in the order the phase reaches them
        if (fed := self._prefixed(model, steps)) is None:
            return model, train, val, sides
        return fed, train, self._fed_val(fed, val, model.backbone.preprocessing.input_size, pinned) or val, sides

    def _epoch_sides(self, model: GraftModel, phase: Phase) -> list[int] | None:
        """The side each epoch of ``phase`` trains at under progressive resizing (:mod:`graft.train.resolution`), said in
        one line; ``None`` where it is off, the phase too short, or the network does not run on smaller images."""
        channels, height, width = model.backbone.preprocessing.input_size
        sides = epoch_sides(width, phase.epochs) if self.settings.progressive and height == width else None
        if sides is None or sides[0] == width:
            return None
        if not accepts(model, channels, sides[0]):
            self.log(f"progressive resizing: this network does not run on {sides[0]}-pixel images; every epoch trains at {width}")
            return None
        small = sides.count(sides[0])
        first = f"epochs 1-{small} train" if small > 1 else "epoch 1 trains"
        self.log(
            f"progressive resizing: {first} at {sides[0]} pixels, the side grows to {width} by epoch "
            f"{sides.index(width) + 1}; validation runs at {width} (--no-progressive trains every epoch at {width})"
        )
        return sides

    def _prefixed(self, model: GraftModel, steps: dict[int, int]) -> PrefixFed | None:
        """With augmentation the frozen first blocks (all of them for ``frozen``) still run every step, but without
        autograd and, where the phase's ``steps`` (at each input side) predict enough work, through a faster copy built
        once for the phase (:class:`graft.inference.FrozenForward`); ``None`` where no first block is frozen or the
        backbone cannot be cut."""
        if not model.backbone_trains():
            prefix, rest = model.backbone, nn.Identity()
        elif (frozen := frozen_blocks(model.backbone)) and (cut := split_frozen_prefix(model.backbone, frozen)) is not None:
            prefix, rest = cut
        else:
            return None
        prefix.eval()
        return PrefixFed(rest, model.head, FrozenForward(prefix, steps, self.settings.precision))

    def _fed_val(self, fed: PrefixFed, val: DataLoader, input_size: tuple[int, ...], pinned: bool) -> DataLoader | None:
        """Batches of the frozen blocks' outputs on the validation images, computed once for the phase, where the
        training images are augmented and so go through the frozen blocks every step (:meth:`_prefixed`): the
        validation images are not augmented and the frozen blocks do not change during the phase, so each
        validation pass needs only the blocks after them (:meth:`_val_logits`). ``None`` where the outputs do
        not fit in what the decoded images leave of their bound (``GRAFT_DECODE_CACHE_MB``): every validation
        pass then runs the whole network, as before. Computed in floating point, as the training steps see them.
        """
        assert isinstance(fed.prefix, FrozenForward)
        prefix, images = fed.prefix.module, len(val.dataset)  # type: ignore[arg-type]
        need = _output_bytes(prefix, input_size) * images
        if need > self._decoded.room():
            return None
        outputs = forward_all(prefix, val, floating(self.settings.precision, module_device(prefix)))
        self.log(
            f"the frozen blocks' outputs on the {images:,} validation images computed once ({need / 2**20:,.0f} MB in memory): "
            "each validation pass runs only the blocks after them"
        )
        own = torch.Generator().manual_seed(self.settings.seed)  # iterating draws a seed: not from augmentation's generator
        return DataLoader(TensorDataset(*outputs), batch_size=self.settings.batch_size, generator=own, pin_memory=pinned)

    def _tensor_loaders(self, parts: list[TensorDataset], pinned: bool) -> tuple[DataLoader, DataLoader]:
        """Training and validation batches of precomputed inputs, shuffled and sharded as the image loaders are."""
        s = self.settings
        generator, sampler = torch.Generator().manual_seed(s.seed), distributed.sampler(parts[0], s.seed)
        batch = distributed.local_batch(s.batch_size)
        train = DataLoader(parts[0], batch, shuffle=sampler is None, sampler=sampler, generator=generator, pin_memory=pinned)
        val_rows = distributed.shard(range(len(parts[1])))  # this rank's unpadded share, gathered after the pass
        return train, DataLoader(parts[1], batch_size=s.batch_size, sampler=val_rows, pin_memory=pinned)

    def _prefix_fed(self, model: GraftModel, split: Split, pinned: bool) -> tuple[nn.Module, DataLoader, DataLoader] | None:
        """Where the first blocks are frozen and the images neither augmented nor mixed: their output computed once per image,
        and only the blocks after them (and the head) run each epoch; ``None`` where the backbone cannot be cut.

        The outputs are held in memory, within what the decoded images leave of their bound
        (``GRAFT_DECODE_CACHE_MB``: :mod:`graft.data.decoded`); where they would not fit, every epoch runs the
        whole backbone, as before. They are what the frozen blocks compute in the run's precision, so each
        step sees the same numbers it would have computed itself.
        """
        frozen, blocks = frozen_blocks(model.backbone), len(model.backbone.blocks())
        cut = split_frozen_prefix(model.backbone, frozen)
        if cut is None:
            return None
        prefix, rest = cut
        s, pre, device = self.settings, model.backbone.preprocessing, module_device(model)
        prefix.eval()  # frozen blocks: inference mode (apply_freezing sets the modes again before each epoch)
        images = len(split.train) + len(split.val)
        need, room = _output_bytes(prefix, pre.input_size) * images, self._decoded.room()
        if need > room:
            self.log(
                f"the frozen blocks' outputs ({need / 2**20:,.0f} MB) do not fit in memory (GRAFT_DECODE_CACHE_MB): every epoch runs them"
            )
            return None
        # one pass over both, as the features strategy's cache fills: one prediction of its length (graft.inference)
        both = make_loader(Path(split.root), [*split.train, *split.val], pre, batch_size=s.batch_size, workers=s.workers, pin_memory=pinned)
        parts = _train_and_val(*forward_all(prefix, both, floating(s.precision, device)), len(split.train))
        self.log(
            f"the {frozen} frozen blocks of {blocks} run once per image ({images:,} images, "
            f"{need / 2**20:,.0f} MB in memory): each epoch runs the last {blocks - frozen} and the head"
        )
        return PrefixFed(rest, model.head), *self._tensor_loaders(parts, pinned)

    def _run_phase(
        self, model: GraftModel, phase: Phase, split: Split, strategy: str, progress: Progress, resume: dict[str, Any] | None, start: float
    ) -> None:
        s = self.settings
        if progress.epoch >= phase.epochs:  # resumed after the phase's last checkpoint: nothing left in it
            return
        module, train, val, sides = self._loaders(model, split, phase)
        full = sides[-1] if sides else None
        self._last = module, val
        if phase.solve and module is model.head and isinstance(model.head, nn.Linear):
            self._solve_head(model, phase, train.dataset, val.dataset, strategy, progress, start)  # type: ignore[arg-type]
            return
        stepped = distributed.wrap(module)  # DDP under torch.distributed: gradients averaged over the ranks
        optimizer = adamw(phase.groups, s.weight_decay)  # fused where torch has the kernel (graft.train.optim)
        # OneCycleLR divides by its warm-up length, which rounds to zero under 20 steps: a phase that
        # short simply stops part-way down the annealing curve.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in phase.groups], total_steps=max(phase.epochs * len(train), MIN_SCHEDULE_STEPS), pct_start=0.1
        )
        scaler = grad_scaler(s.precision, module_device(module))  # one a phase: its loss scale adapts over many steps
        mix = None if isinstance(train.dataset, TensorDataset) else mixer(s.mix, len(split.classes))  # cached inputs are not images
        decay = ema_decay(s.ema)
        averaged = WeightAverage(module, decay) if decay is not None else None
        if averaged is not None:  # after every optimizer step (none where fp16 gradients overflowed)
            optimizer.register_step_post_hook(lambda *_: averaged.update_parameters(module))
        if resume is not None:
            try:
                load_state(optimizer, resume["optimizer"])  # its state goes to each parameter's device and layout
                scheduler.load_state_dict(resume["scheduler"])
                if resume.get("scaler"):  # {} from a run without loss scaling (the CPU, bf16, fp32)
                    scaler.load_state_dict(resume["scaler"])
                if averaged is not None:
                    averaged.load_state_dict(resume["ema"])
            except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise misfit(exc) from exc
        while progress.epoch < phase.epochs and progress.stale < s.patience:
            tick, epoch = time.perf_counter(), progress.epoch + 1
            reshuffle(train, epoch_seed(s.seed, progress.phase, epoch))
            module.train() if module is model.head else apply_freezing(model, phase, self._kept_norms)
            batches = self._until_stopped(track(train, f"{strategy}/{phase.name} epoch {epoch}/{phase.epochs}", total=len(train)))
            side = sides[epoch - 1] if sides else None
            batches = mixed(batches if side is None else shrunk(batches, side), mix)
            stats = train_epoch(stepped, batches, optimizer, scheduler, self.loss_fn, s.precision, scaler)
            stats = EpochStats(*distributed.mean(stats.loss, stats.accuracy))  # this rank's shard: the mean of equal shards
            val_stats, current = self._validate(module, val)
            record = self._record(strategy, phase, epoch, stats, val_stats, time.perf_counter() - tick)
            record.update(self._balanced("val", current))
            if side is not None:
                record["side"] = side
            progress.epoch = epoch
            improved = self._keep_best(model, module, progress, "weights", current, None)
            if averaged is not None:
                ema_stats, ema_score = self._validate(averaged.module, val)
                record.update(
                    ema_val_loss=round(ema_stats.loss, 6),
                    ema_val_accuracy=round(ema_stats.accuracy, 6),
                    **self._balanced("ema_val", ema_score),
                )
                improved = self._keep_best(model, module, progress, "ema", ema_score, averaged) or improved
            # an epoch on shrunk images never ends the phase: the epochs at the full side are still to come
            progress.stale = 0 if improved or side not in (None, full) else progress.stale + 1
            record["best"] = progress.best
            progress.history.append(record)
            if progress.stale >= s.patience:
                self.log(f"{strategy}/{phase.name}: validation {self.metric} has not improved for {progress.stale} epochs; stopping early")
            self._checkpoint(model, optimizer, scheduler, progress, start, scaler, averaged)
            if self.metrics_path is not None:  # after the checkpoint: a metrics line means its epoch is saved
                append_line(self.metrics_path, json.dumps(record))
        self._say_if_unlearnt(strategy, phase, progress, len(split.classes))
        if progress.best_state is not None:
            best = progress.best or {}
            self.log(
                f"{strategy}/{phase.name}: keeping the {'weight average' if best.get('of') == 'ema' else 'weights'} of epoch "
                f"{best.get('epoch')} (validation {self.metric} {best.get('metric', 0):.2%})"
            )
            model.load_state_dict(progress.best_state)

    def _say_if_unlearnt(self, strategy: str, phase: Phase, progress: Progress, num_classes: int) -> None:
        """One line where a phase of two epochs or more ends with a training loss no better than a uniform guess's (ln k,
        whatever the class weights, label smoothing or mixing): the mark of a network that diverged, or collapsed to one
        output, as three times the default rate does on fashion and characters (docs/results.md). A network that learns,
        however slowly, is below it after its first epoch. Said, not acted on: the run keeps its best epoch as it is."""
        records = [r for r in progress.history if r["phase"] == phase.name]
        guess = math.log(num_classes)
        if len(records) >= 2 and not records[-1]["train_loss"] < guess:  # NaN counts as not learnt
            self.log(
                f"{strategy}/{phase.name}: training did not learn (training loss {records[-1]['train_loss']:.4f}, a uniform guess's "
                f"{guess:.4f}): the learning rate is likely too high for this data; try --lr {self.settings.lr / 3:.1g}"
            )

    def _adjust(self, model: GraftModel, split: Split, last: Phase) -> float:
        """Fold into the head the logit adjustment that scores the highest balanced accuracy on the validation part,
        computed through the last phase's module and batches (cached inputs where it had them); its strength."""
        module, val = self._last if self._last is not None else self._loaders(model, split, last)[::2]  # resumed past its end
        logits, labels = self._val_logits(module, val)
        prior = log_prior([y for _, y in split.train], len(split.classes))
        tau, scores = choose_strength(logits, labels, prior)
        fold_into(model.head, tau, prior)
        if tau:
            self.log(
                f"decisions moved towards the rare classes by {tau:g} x log(class share): validation balanced accuracy "
                f"{scores[0.0]:.2%} -> {scores[tau]:.2%}"
            )
        else:
            self.log(f"decisions left as trained: no move towards the rare classes scores better on validation ({scores[0.0]:.2%})")
        return tau

    def _val_logits(self, module: nn.Module, val: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, labels)`` of ``module`` on the validation batches, every rank's shard gathered: every image once."""
        if isinstance(module, PrefixFed) and module.prefix is not None and isinstance(val.dataset, TensorDataset):
            module = PrefixFed(module.rest, module.head)  # the batches are the frozen blocks' outputs already (_fed_val)
        return distributed.gather_rows(*forward_all(module, val, self.settings.precision))

    def _validate(self, module: nn.Module, val: DataLoader) -> tuple[EpochStats, Score]:
        """Loss and accuracy of ``module`` on the validation batches, and its score on the selection metric."""
        logits, labels = self._val_logits(module, val)
        stats = evaluate_logits(logits, labels, self.loss_fn)
        return stats, score(logits, labels, stats.loss, self.metric)

    def _balanced(self, prefix: str, current: Score) -> dict[str, float]:
        """The record's balanced accuracy field, where it is the selection metric (accuracy is recorded anyway)."""
        return {f"{prefix}_balanced_accuracy": round(current.metric, 6)} if self.metric == "balanced_accuracy" else {}

    @staticmethod
    def _keep_best(
        model: GraftModel, module: nn.Module, progress: Progress, of: str, current: Score, averaged: WeightAverage | None
    ) -> bool:
        """Keep the model's state if ``current`` beats the phase's best; with ``averaged``, the state with its weights in ``module``."""
        if progress.best is not None and not current.beats(Score(progress.best["metric"], progress.best["loss"])):
            return False
        progress.best = {"epoch": progress.epoch, "of": of, "metric": current.metric, "loss": current.loss}
        state = copy.deepcopy(model.state_dict())
        if averaged is not None:  # the average's tensors under the model's names (module may be a part of it, or PrefixFed)
            name = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
            own = module.state_dict(keep_vars=True)
            state.update({name[id(own[k])]: v.detach().clone() for k, v in averaged.weights().items()})
        progress.best_state = state
        return True

    def _solve_head(
        self, model: GraftModel, phase: Phase, train: TensorDataset, val: TensorDataset, strategy: str, progress: Progress, start: float
    ) -> None:
        """The linear head on cached features solved to its optimum (graft.train.solver), its strength chosen on validation.

        One record stands for the whole phase: there are no epochs to report, only the optimum reached. The
        solver works on the cached features where they are, on the CPU; the solution is copied into the head
        on its device.
        """
        tick = time.perf_counter()
        # on rank 0, sent to the others: every rank's head the same, bit for bit
        solved = distributed.on_main(
            lambda: fit_linear_head(*train.tensors, *val.tensors, model.head.out_features, class_weight=self.class_weight)
        )
        copy_into(solved, model.head)
        device = module_device(model.head)
        with torch.no_grad():
            stats = [evaluate_logits(model.head(part.tensors[0].to(device)), part.tensors[1], self.loss_fn) for part in (train, val)]
        record = self._record(strategy, phase, 1, *stats, time.perf_counter() - tick)
        record["solver"] = {"C": solved.C, "class_weight": solved.class_weight, "converged": solved.converged}
        self.log(f"{strategy}/{phase.name}: linear head solved to its optimum, L2 strength C={solved.C:g} chosen on the validation images")
        progress.epoch, progress.best_state = phase.epochs, None
        progress.history.append(record)
        self._checkpoint(model, None, None, progress, start)
        if self.metrics_path is not None:
            append_line(self.metrics_path, json.dumps(record))

    def _checkpoint(
        self,
        model: GraftModel,
        optimizer: torch.optim.Optimizer | None,
        scheduler: Any,
        progress: Progress,
        start: float,
        scaler: torch.amp.GradScaler | None = None,
        averaged: WeightAverage | None = None,
    ) -> None:
        if self.checkpoint_path is None:
            return
        saved = {**vars(progress), "seconds": progress.seconds + time.perf_counter() - start}
        state = {
            "config": self.config,
            "phases": self._phase_names,
            "progress": saved,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else {},  # {}: a solved phase has none
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "scaler": scaler.state_dict() if scaler is not None else {},  # {} unless fp16 scales the loss
            "ema": averaged.state_dict() if averaged is not None else {},  # the weight average, where the run keeps one
            "rng": rng_states(),
        }
        save_checkpoint(self.checkpoint_path, state)

    def _record(self, strategy: str, phase: Phase, epoch: int, train: EpochStats, val: EpochStats, seconds: float) -> dict[str, Any]:
        record = {
            "strategy": strategy,
            "phase": phase.name,
            "epoch": epoch,
            "train_loss": round(train.loss, 6),
            "train_accuracy": round(train.accuracy, 6),
            "val_loss": round(val.loss, 6),
            "val_accuracy": round(val.accuracy, 6),
            "seconds": round(seconds, 3),
        }
        self.log(
            f"{strategy}/{phase.name} epoch {epoch}/{phase.epochs}: train loss {train.loss:.4f} acc {train.accuracy:.2%} · "
            f"val loss {val.loss:.4f} acc {val.accuracy:.2%} · {seconds:.1f}s"
        )
        return record


def train_model(
    model: GraftModel, strategy: Strategy, split: Split, settings: TrainSettings | None = None, log: Callable[[str], None] | None = None
) -> TrainResult:
    """Train ``model`` with ``strategy`` on ``split``, in memory: no run directory, no checkpoint.

    The lower rung under :func:`graft.fit`, for people who build their own model and split (a benchmark, a
    notebook experiment); the same trainer, the same phases, the same seeding.

        >>> result = train_model(GraftModel(SmallCNN(), 3), get_strategy("frozen"), split, TrainSettings(epochs=2))  # doctest: +SKIP
    """
    settings = (settings or TrainSettings()).validate()
    seed_everything(settings.seed)
    return Trainer(settings, log=log).fit(model, strategy, split)


def _train_and_val(rows: torch.Tensor, labels: torch.Tensor, train: int) -> list[TensorDataset]:
    """The training and validation parts of one pass over the training images, then the validation ones."""
    return [TensorDataset(rows[:train], labels[:train]), TensorDataset(rows[train:], labels[train:])]


def _output_bytes(prefix: nn.Module, input_size: tuple[int, ...]) -> int:
    """What the frozen blocks' output on one image takes, held in fp32 as :func:`graft.inference.forward_all` gives it."""
    with torch.no_grad():
        return prefix(torch.zeros(1, *input_size, device=module_device(prefix))).numel() * 4
