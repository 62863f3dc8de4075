"""``graft auto``: the best model a time budget buys, chosen by measurement on the validation images.

The budget is wall-clock time, everything included (the data scan, feature extraction, the final test
pass, the report), and it is kept the way AutoGluon's ``time_limit`` users asked for it to be (autogluon
#1279, #2012): nothing starts that its measured cost says cannot finish, and there is always an answer.

1. Rank the backbones (the offline EfficientNet-Lite0/1/2, or ``backbones``) by LogME on a sample of the
   training images (:mod:`graft.transferability`), measuring each one's throughput on the way; at most
   :data:`RANK_SHARE` of the budget.
2. Make the answer that always exists first: a solved linear probe (``features``) on the best-scoring
   backbone whose probe fits in half of the time left (else the cheapest), then on the next one if it can
   afford it. Features go through the cache, so the probe reuses what the ranking computed.
3. On the backbone whose probe did best on validation, train candidates cheapest first (finetune the last
   two blocks, the last half, every layer; before them, on small images, the small CNN from scratch) for
   :data:`RUNG_EPOCHS` epochs each, keep the better half by validation figures, and train those again with
   twice the epochs (successive halving) while the clock allows. Each run's cost is estimated beforehand
   from the measured throughput (corrected by what earlier runs really took); a run that would not finish
   before the finishing reserve is not started, and one that runs late is stopped between batches keeping
   its best state.
4. Rank by validation balanced accuracy where the training classes are uneven, else accuracy; the winner,
   and only the winner, is then scored once on the test part and saved as an ordinary run directory,
   with ``leaderboard.json``/``.csv`` beside it.

Every candidate trains on one seeded split (the one ``graft fit`` makes), validated on the same stratified
sample of at most :func:`validation_size` of its validation images: per-epoch validation is a full
forward pass, and on Fashion-MNIST's 3,000 validation images it would cost more than the training epoch.
The search never holds the test part (its split has none), so no choice can depend on it.
"""

import copy
import csv
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from time import monotonic
from typing import Any

import torch
from torch import nn

from graft.advice import stratified_sample
from graft.api import Run, finish_run
from graft.atomic import write_json, write_text
from graft.backbones.base import Backbone
from graft.backbones.prefix import frozen_blocks, split_frozen_prefix
from graft.config import FitConfig
from graft.console import log, warn
from graft.data.dataset import load_data
from graft.data.decoded import DecodedImages
from graft.data.images import typical_side
from graft.data.loader import make_loader
from graft.data.split import Split, make_split
from graft.device import resolve_device
from graft.errors import GraftError, Interrupted
from graft.evaluation import logits_of
from graft.features import cached_features
from graft.heap import freed_memory_kept
from graft.inference import autocast, prepare, to_channels_last
from graft.interrupt import deferred_interrupts
from graft.metrics import classification_report
from graft.model import GraftModel, PrefixFed
from graft.outdir import prepare_out
from graft.report.metrics import LEADERBOARD
from graft.rundir import METRICS
from graft.sources import create_backbone
from graft.strategies import get_strategy
from graft.strategies.transfer import DEFAULT_SHARE
from graft.train.depthwise import fast_depthwise
from graft.train.recipe import selection_metric
from graft.train.trainer import Trainer, TrainResult, apply_freezing, seed_everything
from graft.transferability import logme

DEFAULT_BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")  # the ones with offline weights
RANK_SHARE = 0.2  # of the budget at most for ranking backbones (LogME)
RANK_IMAGES = 300  # training images sampled (stratified) to score a backbone
RUNG_EPOCHS = 2  # epochs of the first successive-halving rung; each later rung doubles them
MAX_EPOCHS = 10  # graft fit's default epochs: the longest run auto asks for
SPEED_BATCH = 16  # images a throughput measurement runs (per-batch overheads make fewer look slower per image)
SOLVER_SECONDS = 5e-8  # per (image x feature x class) of the L-BFGS head (docs/results.md: 9.5 s for 4,600 x 1,280 x 46)
OVERHEAD_SECONDS = 3.0  # building a model, its optimizer, the first batch's warm-up
SMALL_IMAGES = 64  # px, the longer side: images this small add the small CNN trained from scratch to the candidates
SCRATCH = "smallcnn"
FINISH_OVERHEAD = 15.0  # saving the winner and writing its report
TEST_MARGIN = 1.2  # the final test pass is planned at this times its measured inference speed
MIN_BUDGET = 10.0
LEADERBOARD_COLUMNS = (
    "name",
    "backbone",
    "strategy",
    "options",
    "epochs",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_accuracy_interval",
    "test_accuracy",
    "test_accuracy_interval",
    "seconds",
    "estimated_seconds",
    "stopped",
    "winner",
)

_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?")


def parse_time(text: str | float) -> float:
    """Seconds in a budget written ``90s``, ``15m``, ``1h30m``, ``2h`` (or a plain number of seconds)."""
    if isinstance(text, bool):
        seconds = None
    elif isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(str(text).strip().lower().replace(" ", ""))
        given = match and any(match.group(k) for k in "hms")
        seconds = 3600 * float(match["h"] or 0) + 60 * float(match["m"] or 0) + float(match["s"] or 0) if given else None  # type: ignore[index]
    if seconds is None:
        raise GraftError(f"--time {text!r} is not a duration; give e.g. 90s, 15m, 1h30m or 2h")
    if seconds < MIN_BUDGET:
        raise GraftError(f"--time {text} is too short to train anything; give at least {MIN_BUDGET:g}s")
    return seconds


@dataclass
class Clock:
    """The budget's wall clock; ``now`` is injectable so tests can run a search on simulated time."""

    budget: float  # seconds
    now: Callable[[], float] = monotonic

    def __post_init__(self) -> None:
        self.start = self.now()

    def elapsed(self) -> float:
        return self.now() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


@dataclass(frozen=True)
class Speed:
    """Seconds per image of one backbone, measured once on a few training images (decoding included)."""

    forward: float  # inference, no gradient
    step: float  # forward + backward through every layer

    def train(self, share: float) -> float:
        """Seconds per training image when ``share`` of the backbone's parameters train (an upper bound:
        EfficientNets hold most parameters in their last, cheapest-to-run stages)."""
        return self.forward + share * max(self.step - self.forward, 0.0)


@dataclass
class Fed:
    """Seconds per image of a finetune whose frozen blocks run once: that pass (decoding included), then each epoch's."""

    once: float
    speed: Speed  # the trained blocks and the head alone, on the frozen blocks' outputs


@dataclass(frozen=True)
class Candidate:
    """One thing to try: a backbone and a strategy with its options."""

    backbone: str
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.options.items())
        return f"{self.strategy}{extra} on {self.backbone}"


@dataclass
class Entry:
    """A leaderboard row: one training run of a candidate (or one it could not afford to start)."""

    name: str
    backbone: str
    strategy: str
    options: dict[str, Any]
    epochs: int
    estimated_seconds: float
    left_at_start: float  # seconds of budget left when it was considered
    reserve: float  # seconds kept back for finishing when it was considered
    val_accuracy: float | None = None
    val_balanced_accuracy: float | None = None
    val_accuracy_interval: list[float] | None = None
    test_accuracy: float | None = None
    test_accuracy_interval: list[float] | None = None
    test_images: int | None = None  # the winner's: all of the test part, or the sample the budget allowed
    seconds: float = 0.0
    stopped: str = "running"  # then finished | halved | promoted | out of time | interrupted | not started: out of time (...)
    winner: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Best:
    """The best model so far, in memory, ready to be finished into a run directory."""

    entry: Entry
    config: FitConfig
    model: GraftModel
    trained: TrainResult
    score: float


@dataclass
class AutoResult:
    """What ``graft auto`` made: the winner's run and the leaderboard of every candidate tried."""

    run: Run
    leaderboard: list[dict[str, Any]]
    seconds: float  # wall time of the whole search, the finishing included
    budget: float

    def to_dict(self) -> dict[str, Any]:
        rows = [{k: v for k, v in row.items() if k != "history"} for row in self.leaderboard]  # the epochs are in leaderboard.json
        return {"run": self.run.to_dict(), "seconds": round(self.seconds, 1), "budget": self.budget, "leaderboard": rows}


def validation_size(classes: int) -> int:
    """Validation images the search uses: enough for a stable ranking (20 a class, at least 500), no more."""
    return max(500, 20 * classes)


class Search:
    """The search itself, on a split without a test part: ranking, probes, successive halving.

    ``best`` is the best model so far at every moment, so an interruption (Ctrl-C) still has an answer.
    """

    def __init__(self, base: FitConfig, split: Split, backbones: list[str], clock: Clock, on_entry: Callable[[list[Entry]], None]):
        if split.test:
            raise ValueError("the search must not hold the test part")
        self.base, self.split, self.backbones, self.clock, self.on_entry = base, split, backbones, clock, on_entry
        self.settings = base.settings
        self.entries: list[Entry] = []
        self.best: Best | None = None
        self.speeds: dict[str, Speed] = {}
        self.shares: dict[tuple[str, str, str], float] = {}  # (backbone, strategy, options) -> trained share of the backbone
        self.fed: dict[tuple[str, str, str], Fed] = {}  # the same keys -> cost where the frozen blocks run once (fed_speed)
        self.dims: dict[str, int] = {}  # feature dimensions (the solver's cost)
        self.blocks: dict[str, int] = {}  # stages (which finetune depths exist)
        self.device = resolve_device(self.settings.device)
        self.calibration = 1.0  # how much longer than measured throughput says trained runs really take (the latest one's ratio)
        self.test_size = 0  # set by the caller: the test part's size, for the finishing reserve
        self.balanced = selection_metric([y for _, y in split.train], len(split.classes)) == "balanced_accuracy"

    # --- the clock ----------------------------------------------------------------------------------------
    def reserve(self, backbone: str) -> float:
        """Seconds kept for finishing: the test pass of the slower of ``backbone`` and the best so far (the report
        reuses that pass), saving, the report."""
        names = [backbone] + ([self.best.entry.backbone] if self.best else [])
        return FINISH_OVERHEAD + TEST_MARGIN * self.test_size * max(self.speeds[n].forward for n in names if n in self.speeds)

    def _status(self) -> str:
        best = f"best so far: {self.best.entry.name} {self.best.score:.2%}" if self.best else "no model yet"
        return f"[{self.clock.elapsed():.0f}s of {self.clock.budget:.0f}s, {max(self.clock.left(), 0):.0f}s left; {best}]"

    # --- measuring ----------------------------------------------------------------------------------------
    def batch(self, model: GraftModel) -> tuple[torch.Tensor, torch.Tensor, float]:
        """:data:`SPEED_BATCH` training images as the model takes them, their labels, and seconds an image to decode them."""
        loader = make_loader(Path(self.split.root), self.split.train[:SPEED_BATCH], model.backbone.preprocessing, batch_size=SPEED_BATCH)
        device = next(model.parameters()).device
        tick = self.clock.now()
        inputs, labels = next(iter(loader))
        decode = (self.clock.now() - tick) / len(labels)
        return to_channels_last(inputs.to(device)), torch.as_tensor(labels).to(device), decode

    def measure(self, model: GraftModel, inputs: torch.Tensor, labels: torch.Tensor, decode: float) -> Speed:
        """Seconds per image of inference and of a full training step on ``inputs``, ``decode`` seconds an image added.

        On a copy of ``model``: a training step updates BatchNorm statistics, and the backbone's features must
        stay its own. The passes run twice and the second is timed: the first calls of a network pick and
        build its kernels, several times slower than the rest. Decoding counts, as it does in training; later
        passes over the validation images correct the inference figure (:meth:`train`).
        """
        model = copy.deepcopy(model)
        with freed_memory_kept():  # as the trainer and every pass run (graft.heap): the second reuses the first's memory
            forward, step = [self._passes(model, inputs, labels) for _ in range(2)][-1]
        return Speed(decode + forward / len(labels), decode + step / len(labels))

    def measure_fed(self, backbone: str, candidates: list[Candidate]) -> None:
        """:meth:`fed_speed` of the ``finetune`` candidates among ``candidates`` (where the images are neither augmented nor mixed:
        only then are the frozen blocks' outputs held). Only for the backbone the halving trains: each costs a
        trace and a few passes (about 2 s on lite0), which the ranking of every backbone need not pay."""
        finetunes = [c for c in candidates if c.strategy == "finetune"]
        if not finetunes or self.settings.varies_inputs:
            return
        seed_everything(self.settings.seed)
        model = GraftModel(create_backbone(backbone), len(self.split.classes), self.settings.head).to(self.device)
        prepare(model)
        batch = self.batch(model)
        for candidate in finetunes:
            if (fed := self.fed_speed(candidate, model, *batch)) is not None:
                self.fed[(backbone, candidate.strategy, repr(candidate.options))] = fed

    def fed_speed(self, candidate: Candidate, model: GraftModel, inputs: torch.Tensor, labels: torch.Tensor, decode: float) -> Fed | None:
        """What a ``finetune`` without augmentation costs where the trainer runs its frozen blocks once per image
        (:meth:`graft.train.trainer.Trainer._prefix_fed`): that pass, and each epoch's trained blocks and head
        alone. ``None`` where every epoch runs the whole backbone (nothing frozen, a backbone that cannot be cut,
        outputs too large to hold): parameter shares then estimate it.

        Measured, not estimated from parameters: EfficientNets hold most of theirs in the last blocks, which
        are the cheapest to run, so a share of parameters overstates a share of the work several times over.
        """
        model = copy.deepcopy(model)
        strategy = get_strategy(candidate.strategy, **candidate.options)
        trained = [p for p in strategy.phases(model, self.settings) if not (p.solve or p.cached)]
        apply_freezing(model, trained[0])
        cut = split_frozen_prefix(model.backbone, frozen_blocks(model.backbone))
        if cut is None:
            return None
        prefix, rest = cut
        prefix.eval()
        with freed_memory_kept():  # as in measure()
            for _ in range(2):  # the second is timed, as in measure()
                tick = self.clock.now()
                with torch.no_grad(), autocast(self.settings.precision, inputs.device):
                    outputs = prefix(inputs).float()
                once = self.clock.now() - tick
            if outputs[0].numel() * 4 * (len(self.split.train) + len(self.split.val)) > DecodedImages().room():
                return None  # the trainer's own test: the outputs must fit beside the decoded images
            forward, step = [self._passes(PrefixFed(rest, model.head), outputs, labels) for _ in range(2)][-1]
        return Fed(decode + once / len(labels), Speed(forward / len(labels), step / len(labels)))

    def _passes(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """Seconds of one inference pass and of one training step (forward and backward) over ``inputs``."""
        precision = self.settings.precision
        model.eval()
        tick = self.clock.now()
        with torch.no_grad(), autocast(precision, inputs.device):
            model(inputs)
        middle = self.clock.now()
        model.train()
        with autocast(precision, inputs.device), fast_depthwise(precision, inputs.device, model):  # as train_epoch steps
            loss = torch.nn.functional.cross_entropy(model(inputs).float(), labels)
        loss.backward()
        return middle - tick, self.clock.now() - middle

    def profile(self, name: str, source: Backbone, candidates: Callable[[str], list[Candidate]]) -> None:
        """What the estimates need of backbone ``name``: its measured speeds, feature size and stages, and the share
        of it each of ``candidates(name)`` trains (called once the stages are known: they decide the finetunes)."""
        model = GraftModel(source, len(self.split.classes), self.settings.head).to(self.device)
        prepare(model)
        self.speeds[name], self.dims[name], self.blocks[name] = (
            self.measure(model, *self.batch(model)),
            source.num_features,
            len(source.blocks()),
        )
        for candidate in candidates(name):
            self.shares[(name, candidate.strategy, repr(candidate.options))] = self.share(candidate, model)

    def share(self, candidate: Candidate, model: GraftModel) -> float:
        """The largest share of the backbone's parameters any of the candidate's epoch-trained phases trains."""
        strategy = get_strategy(candidate.strategy, **candidate.options)
        backbone = {id(p) for p in model.backbone.parameters()}
        total = sum(p.numel() for p in model.backbone.parameters()) or 1
        phases = [p for p in strategy.phases(model, self.settings) if not (p.solve or p.cached)]
        trained = [sum(p.numel() for g in phase.groups for p in g["params"] if id(p) in backbone) for phase in phases]
        return max(trained, default=0) / total

    def estimate(self, candidate: Candidate, epochs: int) -> float:
        """Seconds the candidate needs for ``epochs`` epochs a phase: measured throughput times images, plus the solver."""
        speed, train, val = self.speeds[candidate.backbone], len(self.split.train), len(self.split.val)
        cached = (train + val) * speed.forward  # an upper bound: the ranking's sample is in the cache already
        solver = SOLVER_SECONDS * train * self.dims[candidate.backbone] * len(self.split.classes)
        seconds = OVERHEAD_SECONDS + val * speed.forward  # the validation figures every candidate gets at the end
        if candidate.strategy in ("features", "lpft"):
            seconds += cached + solver
        key = (candidate.backbone, candidate.strategy, repr(candidate.options))
        if (fed := self.fed.get(key)) is not None:  # the frozen blocks once, then epochs of the rest
            seconds += (train + val) * fed.once + epochs * (train * fed.speed.step + val * fed.speed.forward) * self.calibration
        elif candidate.strategy != "features":
            seconds += epochs * (train * speed.train(self.shares[key]) + val * speed.forward) * self.calibration
        return seconds

    def affordable(self, candidate: Candidate, want: int, left: float) -> int:
        """The most epochs, up to ``want``, the candidate can run in ``left`` seconds and still leave the finishing reserve; 0 if none."""
        room = left - self.reserve(candidate.backbone)
        return next((e for e in range(want, 0, -1) if self.estimate(candidate, e) <= room), 0)

    # --- the search ---------------------------------------------------------------------------------------
    def run(self) -> None:
        ranked = self.rank()
        if (reserve := self.reserve(ranked[0])) > self.clock.left():
            warn(
                f"auto: scoring the final model on the {self.test_size} test images alone needs ~{reserve:.0f}s, more than the "
                f"{max(self.clock.left(), 0):.0f}s left: it will be scored on a sample of them; give more --time to score them all"
            )
        first = self.insurance(ranked)
        self.probe(Candidate(first, "features"), always=True)
        if len(ranked) > 1:
            self.probe(Candidate(next(name for name in ranked if name != first), "features"))
        assert self.best is not None
        backbone = self.best.entry.backbone  # the one validation prefers, not only LogME
        trained = self.trained_candidates(backbone)
        self.measure_fed(backbone, trained)
        self.halving(self.scratch_candidates() + trained)

    def scratch_candidates(self) -> list[Candidate]:
        """The small CNN trained from scratch, where the images are small (:data:`SMALL_IMAGES`) and it is not a
        backbone already: on 32x32 characters it beat every ImageNet transfer from 100 images a class (docs/results.md),
        and at that size it costs little. Validation decides, as for every candidate."""
        if SCRATCH in self.speeds or typical_side(Path(self.split.root), self.split.train) > SMALL_IMAGES:
            return []
        candidates = [Candidate(SCRATCH, "scratch")]
        seed_everything(self.settings.seed)
        self.profile(SCRATCH, create_backbone(SCRATCH), lambda _: candidates)
        return candidates

    def insurance(self, ranked: list[str]) -> str:
        """The backbone of the first probe, the answer that must exist: the best-ranked one whose probe fits in
        half of the time left, else the cheapest. LogME ties are common (devanagari: Lite2 0.532, Lite0 0.528),
        and the best-ranked one's probe, on the slowest network, could otherwise eat the whole budget."""
        cost = {name: self.estimate(Candidate(name, "features"), 1) for name in ranked}
        fits = [name for name in ranked if cost[name] <= (self.clock.left() - self.reserve(name)) / 2]
        return fits[0] if fits else min(ranked, key=cost.__getitem__)

    def test_sample(self, test: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The test images the winner is scored on: all of them where their pass fits in the time left, else a
        stratified sample as large as fits, never fewer than the validation figures use (:func:`validation_size`).

        A slow CPU cannot score thousands of test images in a short budget (fashion's 5,000 took 150 s on an
        AVX2 machine against a 2-minute budget); a sample keeps the budget and says so, with its wider interval.
        """
        assert self.best is not None
        per_image = TEST_MARGIN * self.speeds[self.best.entry.backbone].forward
        fits = int(max(self.clock.left() - FINISH_OVERHEAD, 0.0) / per_image)
        size = max(fits, validation_size(len(self.split.classes)))
        if size >= len(test):
            return test
        warn(
            f"auto: the {len(test)} test images need ~{len(test) * per_image:.0f}s and {max(self.clock.left(), 0):.0f}s are left: "
            f"scoring a stratified sample of {size} (a wider interval); give more --time to score them all"
        )
        return stratified_sample(test, size, self.settings.seed)

    def rank(self) -> list[str]:
        """The backbones that load, best LogME first; each one's throughput measured. The first is always scored."""
        sample = stratified_sample(self.split.train, RANK_IMAGES, self.base.settings.seed)
        scores: dict[str, float] = {}
        last = 0.0
        for name in self.backbones:
            if scores and self.clock.elapsed() + 1.5 * last > RANK_SHARE * self.clock.budget:
                log(f"auto: ranking stops at {len(scores)} backbone(s) to keep within {RANK_SHARE:.0%} of the budget {self._status()}")
                break
            tick = self.clock.now()
            try:
                seed_everything(self.settings.seed)
                source = create_backbone(name)
            except GraftError as exc:
                warn(f"auto: leaving out backbone {name}: {exc}")
                continue
            self.profile(name, source, self.trained_candidates)
            features, labels = cached_features(
                source, Path(self.split.root), sample, self.settings.batch_size, precision=self.settings.precision
            )
            scores[name] = logme(features.numpy(), labels.numpy())
            last = self.clock.now() - tick
            log(
                f"auto: {name}: LogME {scores[name]:.3f}, {1 / self.speeds[name].forward:.0f} images/s inference, "
                f"{1 / self.speeds[name].step:.0f} training {self._status()}"
            )
        if not scores:
            raise GraftError(f"none of the backbones {', '.join(self.backbones)} could be loaded; name others with --backbones")
        return sorted(scores, key=scores.__getitem__, reverse=True)

    def trained_candidates(self, backbone: str) -> list[Candidate]:
        """Epoch-trained candidates on ``backbone``, cheapest first: fine-tuning its last two blocks, its last half
        (``finetune``'s default), and all of it. Data sets disagree on the depth (fashion's validation preferred
        two of lite0's blocks, devanagari's four or all: docs/results.md#the-fine-tuning-recipe), so validation
        picks. A finetune as deep as the whole backbone is ``full``'s job; ``lpft`` and one block, behind
        these on every recipe case, are not tried."""
        blocks = self.blocks[backbone]
        depths = sorted({d for d in (2, math.ceil(blocks * DEFAULT_SHARE)) if d < blocks})
        return [*(Candidate(backbone, "finetune", {"unfreeze": d}) for d in depths), Candidate(backbone, "full")]

    def probe(self, candidate: Candidate, always: bool = False) -> None:
        """The solved linear head on cached features; ``always``: the answer that must exist, made whatever the clock says."""
        left = self.clock.left()
        if not always and not self.affordable(candidate, 1, left):
            self._skip(candidate, 1, left)
            return
        self.train(candidate, self.settings.epochs, left)

    def halving(self, pool: list[Candidate]) -> None:
        """Successive halving: every candidate at :data:`RUNG_EPOCHS`, then the better half at twice the epochs, and so on."""
        epochs, last = RUNG_EPOCHS, {}  # last: each candidate's latest run, by name
        while pool:
            ran: list[tuple[Candidate, Entry]] = []
            for candidate in pool:
                previous = last.get(candidate.name)
                left = self.clock.left()  # one reading decides, and is recorded: the row shows what the decision saw
                can = self.affordable(candidate, epochs, left)
                if can <= (previous.epochs if previous else 0):
                    self._skip(candidate, epochs, left)
                    continue
                entry = self.train(candidate, can, left)
                if previous is not None:
                    previous.stopped = "promoted"  # trained again with more epochs: the row below
                last[candidate.name] = entry
                ran.append((candidate, entry))
                if entry.stopped != "finished":
                    return  # out of time: nothing more fits
            ran.sort(key=lambda pair: -self.score(pair[1]))
            keep = ran[: math.ceil(len(ran) / 2)] if len(ran) > 1 else ran
            for _, entry in ran[len(keep) :]:
                entry.stopped = "halved"
            self.on_entry(self.entries)
            if not keep or epochs >= MAX_EPOCHS:
                return
            # a lone survivor gets all the epochs that fit at once: retraining it rung by rung would repeat its early epochs
            epochs, pool = MAX_EPOCHS if len(keep) == 1 else min(2 * epochs, MAX_EPOCHS), [c for c, _ in keep]

    def score(self, entry: Entry) -> float:
        """The selection figure: validation balanced accuracy where training classes are uneven, else accuracy."""
        value = entry.val_balanced_accuracy if self.balanced else entry.val_accuracy
        return -1.0 if value is None else value

    def _entry(self, candidate: Candidate, epochs: int, left: float) -> Entry:
        """A leaderboard entry for ``candidate`` at ``epochs``: the estimate, time ``left`` and reserve it is judged on."""
        reserve, estimate = self.reserve(candidate.backbone), self.estimate(candidate, epochs)
        return Entry(
            candidate.name,
            candidate.backbone,
            candidate.strategy,
            dict(candidate.options),
            epochs,
            round(estimate, 1),
            round(left, 1),
            round(reserve, 1),
        )

    def _skip(self, candidate: Candidate, epochs: int, left: float) -> None:
        entry = self._entry(candidate, epochs, left)
        estimate, spare = entry.estimated_seconds, max(entry.left_at_start - entry.reserve, 0)
        entry.stopped = f"not started: out of time (needs ~{estimate:.0f}s, {spare:.0f}s to spare)"
        log(f"auto: skipping {candidate.name} at {epochs} epochs: needs ~{estimate:.0f}s {self._status()}")
        self.entries.append(entry)
        self.on_entry(self.entries)

    def train(self, candidate: Candidate, epochs: int, left: float) -> Entry:
        """Train one candidate on the search's split (``left``: the seconds the decision to start it saw), score it on
        the validation part, keep it if it is the best."""
        entry = self._entry(candidate, epochs, left)
        estimate = entry.estimated_seconds
        self.entries.append(entry)
        self.on_entry(self.entries)
        log(f"auto: training {candidate.name}, {epochs} epoch(s), ~{estimate:.0f}s {self._status()}")
        tick = self.clock.now()
        config = FitConfig.create(
            self.base.data,
            classes=self.base.classes,
            backbone=candidate.backbone,
            strategy=candidate.strategy,
            settings=replace(self.settings, epochs=epochs),
            bad_images=self.base.bad_images,
            **candidate.options,
        )
        seed_everything(config.settings.seed)  # every candidate starts from the same random state, as graft fit does
        model = GraftModel(create_backbone(candidate.backbone), len(self.split.classes), config.settings.head)
        trainer = Trainer(config.settings, log=log, stop=lambda: self.clock.left() <= self.reserve(candidate.backbone))
        trained = trainer.fit(model, config.build_strategy(), self.split)
        before = self.clock.now()
        logits, labels = logits_of(model, self.split.root, self.split.val, model.backbone.preprocessing, config.settings.precision)
        speed = self.speeds[candidate.backbone]  # a whole pass over the validation images measures inference better than one batch
        self.speeds[candidate.backbone] = replace(speed, forward=max((self.clock.now() - before) / max(len(labels), 1), 1e-6))
        scores = classification_report(labels.numpy(), logits.argmax(1).numpy(), self.split.classes)
        entry.val_accuracy, entry.val_balanced_accuracy = round(scores.accuracy, 6), round(scores.balanced_accuracy, 6)
        entry.val_accuracy_interval = [round(scores.accuracy_interval.low, 6), round(scores.accuracy_interval.high, 6)]
        entry.seconds, entry.history = round(self.clock.now() - tick, 1), trained.history
        entry.stopped = "out of time" if trained.stopped else "finished"
        if candidate.strategy != "features" and estimate > 0:
            self.calibration = max(0.7, min(4.0, self.calibration * entry.seconds / estimate))
        score = self.score(entry)
        if self.best is None or score > self.best.score:
            self.best = Best(entry, config, model, trained, score)
        log(f"auto: {candidate.name}: validation {score:.2%} in {entry.seconds:.0f}s {self._status()}")
        self.on_entry(self.entries)
        return entry


def write_leaderboard(out: Path, entries: list[Entry]) -> list[dict[str, Any]]:
    """``leaderboard.json`` (every row, with its per-epoch history) and ``leaderboard.csv`` (the table); the rows."""
    rows = [e.to_dict() for e in entries]
    write_json(out / LEADERBOARD, rows)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(LEADERBOARD_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / LEADERBOARD.replace(".json", ".csv"), table.getvalue())
    return rows


def auto(
    data: str | Path,
    time: str | float = "15m",
    *,
    backbones: list[str] | str | None = None,
    classes: str | None = None,
    per_class: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    report: bool = True,
    now: Callable[[], float] | None = None,
) -> AutoResult:
    """The best model ``time`` (``"90s"``, ``"15m"``, ``"1h30m"``) buys on ``data``, chosen on validation figures.

    ``backbones`` (a list, or comma-separated) replaces the candidates (default: the three offline
    EfficientNet-Lite models); graft run directories count. The winner is saved as a run directory in
    ``out`` (default ``runs/auto-DATA``) with ``leaderboard.json``/``.csv``; ``now`` is the clock (tests).
    Ctrl-C saves the best model so far there, then raises :class:`graft.errors.Interrupted`.
    """
    clock = Clock(parse_time(time), now or monotonic)
    names = [b.strip() for b in (backbones.split(",") if isinstance(backbones, str) else backbones or DEFAULT_BACKBONES) if b.strip()]
    if not names:
        raise GraftError("--backbones is empty; name one or more, e.g. tf_efficientnet_lite0,runs/my-run")
    base = FitConfig.create(str(data), classes=classes, seed=seed, device=device, per_class=per_class)
    images = load_data(base.data, base.classes, base.bad_images)
    full = make_split(images, seed=seed, per_class=per_class)
    split = replace(full, val=stratified_sample(full.val, validation_size(len(full.classes)), seed))
    out = prepare_out(Path(out) if out is not None else None, f"auto-{Path(str(data)).name}", overwrite)
    split.save(out)
    log(f"auto: {len(split.train)} training, {len(split.val)} validation images; {clock.budget:.0f}s budget, {len(names)} backbone(s)")
    search = Search(base, replace(split, test=[]), list(dict.fromkeys(names)), clock, lambda entries: write_leaderboard(out, entries))
    search.test_size = len(split.test)
    interrupted = False
    try:
        with deferred_interrupts():  # Ctrl-C lands at the next batch of training or of a pass, never lost in between
            search.run()
    except KeyboardInterrupt:
        interrupted = True
        for entry in search.entries:
            entry.stopped = "interrupted" if entry.stopped == "running" else entry.stopped
        if search.best is None:
            raise Interrupted("interrupted before the first model was made; nothing to keep, run the command again") from None
    best = search.best
    assert best is not None
    best.entry.winner = True
    test = search.test_sample(split.test)
    log(
        f"auto: the winner is {best.entry.name} (validation {best.score:.2%}); scoring it once on {len(test)} test images {search._status()}"
    )
    write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in best.trained.history))

    def record(run: Run) -> None:  # before the report, which shows the leaderboard
        best.entry.test_accuracy, best.entry.test_accuracy_interval = run.result.test_accuracy, run.result.test_accuracy_interval
        best.entry.test_images = len(test)
        write_leaderboard(out, search.entries)

    run = finish_run(best.config, best.model, best.trained, replace(split, test=test), out, report=report, before_report=record)
    rows = [e.to_dict() for e in search.entries]
    seconds = clock.elapsed()
    log(f"auto: done in {seconds:.0f}s of {clock.budget:.0f}s: {best.entry.name}, test accuracy {run.result.test_accuracy:.2%} -> {out}")
    if interrupted:
        raise Interrupted(f"interrupted; the best model so far ({best.entry.name}) is saved in {out}")
    return AutoResult(run, rows, seconds, clock.budget)
