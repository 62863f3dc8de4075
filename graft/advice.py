"""``graft advise``: choose the backbone, the cut point and the strategy by measurement, not folklore.

The folklore (Yosinski et al. 2014; every transfer-learning tutorial since) has two axes:

=====================  ==========================================  ==========================================
                       similar to the source                       different from the source
=====================  ==========================================  ==========================================
small (per class)      linear classifier on the features           linear classifier on earlier activations
large (per class)      fine-tune through the network               fine-tune everything (or train from scratch)
=====================  ==========================================  ==========================================

graft measures both axes on the user's own images, from frozen features only (no training):

- size: training images per class (the training part of the split ``graft fit`` would make), small below
  :data:`SMALL_PER_CLASS`;
- similarity: how much of the best linear-probe accuracy the backbone's *final* features keep, against the
  best of its cut points (:func:`similarity`). Late layers are the source-specific ones (Yosinski et al.'s
  finding): when the target resembles the source they are the best features there are (similarity 1);
  when it does not, an earlier, more generic stage probes better and similarity drops below 1. It needs
  no source data and no source classifier, so it works the same for an ImageNet model and a graft run
  (a network with random weights has no source, hence no similarity);
- which backbone and which cut point: LogME (:mod:`graft.transferability`), computed for each backbone at
  each cut point on a stratified sample of the training images.

The images ``advise`` looks at come from the training part of the same seeded split that ``graft fit``
and ``graft compare`` make, so a later test accuracy is never measured on images that chose the model.
"""

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from graft import api
from graft.backbones import RANDOM, Backbone, TimmBackbone
from graft.console import log
from graft.data.dataset import load_data
from graft.data.loader import make_loader
from graft.data.split import Split, make_split
from graft.device import module_device, pin_memory, resolve_device
from graft.errors import GraftError
from graft.features import cached_features
from graft.inference import forward_all
from graft.sources import create_backbone
from graft.transferability import logme, probe_accuracy, probe_metric

SMALL_PER_CLASS = 100  # training images per class below which a head on frozen features beats fine-tuning
SIMILAR = 0.95  # share of the best cut's above-chance probe accuracy the final layer keeps on similar data
MAX_IMAGES = 1000  # images sampled (stratified) to score candidates: seconds to minutes on a CPU
BOOTSTRAP = 10  # resamples of the sampled images to see whether the top backbone stays on top
BATCH = 64
FINAL = None  # the ``layer`` of a backbone's own output (what ``features`` trains on without ``--layer``)


@dataclass(frozen=True)
class Candidate:
    """One backbone cut at one point: its LogME score and linear-probe accuracy on the sampled images."""

    backbone: str
    layer: int | None  # 0-based stage whose (globally pooled) output is the feature, None for the output
    dims: int
    score: float
    probe_accuracy: float
    fittable: bool = True  # ``graft fit`` can train on this cut (the output always; earlier cuts of timm models)

    @property
    def layer_name(self) -> str:
        return "output" if self.layer is FINAL else f"layer {self.layer}"


@dataclass(frozen=True)
class Rule:
    """Which cell of the size x similarity table the data falls in, and what it prescribes."""

    small: bool
    similar: bool
    strategy: str
    earlier_layer: bool  # the features come from an earlier cut rather than the backbone's output
    sentence: str


@dataclass
class Advice:
    """Everything ``graft advise`` prints, and what ``--run`` trains."""

    data: dict[str, Any]
    candidates: list[Candidate]
    similarity: dict[str, float | None]
    recommendation: dict[str, Any]
    confidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "candidates": [asdict(c) for c in self.candidates],
            "similarity": self.similarity,
            "recommendation": {**self.recommendation, "confidence": self.confidence},
        }


def _pooled(output: torch.Tensor) -> torch.Tensor:
    """A stage's activations as one vector per image: global average over space (or tokens)."""
    if output.ndim == 4:
        return output.mean(dim=(2, 3))
    if output.ndim == 3:
        return output.mean(dim=1)
    return output.flatten(1)


def stage_features(backbone: Backbone, loader: torch.utils.data.DataLoader, precision: str = "auto") -> dict[int, np.ndarray]:
    """Each stage's output but the last, globally pooled, from one pass (forward hooks on ``blocks()``).

    For backbones that ``graft fit --layer`` cannot cut (graft's small CNN and runs made from it): these
    cuts still show where along the network the target is best served, which is what similarity measures.
    The last stage is left out because the backbone's output is (a pooling of) it already.
    """
    stages: list[nn.Module] = backbone.blocks()[:-1]
    collected: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(stages))}
    hooks = [
        stage.register_forward_hook(lambda _m, _i, out, k=k: collected[k].append(_pooled(out).float().cpu()))
        for k, stage in enumerate(stages)
    ]
    try:
        forward_all(backbone, loader, precision)
    finally:
        for hook in hooks:
            hook.remove()
    return {k: torch.cat(v).numpy() for k, v in collected.items()}


def cut_features(
    name: str, root: Path, samples: list[tuple[str, int]], device: torch.device | None = None
) -> tuple[Backbone, dict[int | None, tuple[np.ndarray, bool]], np.ndarray]:
    """The backbone ``name``, its features at every cut point with whether ``graft fit`` can train there, and the labels.

    A timm model is cut at each ``forward_intermediates`` index exactly as ``graft fit --layer k`` cuts it,
    and its features go through the feature cache, so a later ``fit --strategy features`` (or a second
    ``advise``) reads them instead of running the network again. The networks run on ``device`` (default the CPU).
    """
    device = device or torch.device("cpu")
    backbone = create_backbone(name).to(device)
    output, labels = cached_features(backbone, root, samples, BATCH)
    cuts: dict[int | None, tuple[np.ndarray, bool]] = {}
    if isinstance(backbone, TimmBackbone):
        for k in range(len(getattr(backbone.model, "feature_info", []))):
            cuts[k] = (cached_features(create_backbone(name, layer=k).to(device), root, samples, BATCH)[0].numpy(), True)
    else:
        loader = make_loader(root, samples, backbone.preprocessing, batch_size=BATCH, pin_memory=pin_memory(module_device(backbone)))
        cuts = {k: (f, False) for k, f in stage_features(backbone, loader).items()}
    cuts[FINAL] = (output.numpy(), True)
    return backbone, cuts, labels.numpy()


def similarity(candidates: list[Candidate], classes: int) -> float:
    """Share of the best cut's above-chance probe accuracy that the backbone's output keeps, in [0, 1].

    ``(acc_output - chance) / (acc_best - chance)``: 1 when the final (most source-specific) features are
    as good as any cut, i.e. the target looks like the source to this backbone; lower as earlier, more
    generic stages do better. Chance-corrected so that 60% against 65% on two classes counts as the large
    gap it is.
    """
    chance = 1.0 / classes
    best = max(c.probe_accuracy for c in candidates)
    final = next(c for c in candidates if c.layer is FINAL).probe_accuracy
    if best <= chance:
        return 0.0
    return float(np.clip((final - chance) / (best - chance), 0.0, 1.0))


def rule(per_class: float, similarity_value: float | None) -> Rule:
    """The size x similarity table, applied to measured values (unit-tested on constructed cases).

    ``similarity_value`` is None for a backbone without pretrained weights: there is no source to be
    similar to, so it counts as different, and "fine-tune everything" becomes training from scratch.
    """
    small = per_class < SMALL_PER_CLASS
    similar = similarity_value is not None and similarity_value >= SIMILAR
    size = f"{per_class:.0f} training images per class is {'small' if small else 'large'} (< {SMALL_PER_CLASS} is small)"
    if similarity_value is None:
        sim = "the backbone has no pretrained weights, so nothing is similar to it"
    else:
        verdict = "similar" if similar else "different"
        sim = f"the output layer keeps {similarity_value:.0%} of the best cut's probe accuracy ({verdict}; >= {SIMILAR:.0%} is similar)"
    if small and similar:
        return Rule(small, similar, "features", False, f"{size} and {sim}: a linear classifier on the output features")
    if small:
        return Rule(small, similar, "features", True, f"{size} and {sim}: a linear classifier on earlier activations")
    if similar:
        return Rule(small, similar, "finetune", False, f"{size} and {sim}: fine-tune through the network")
    if similarity_value is None:
        return Rule(small, similar, "scratch", False, f"{size} and {sim}: train from scratch")
    return Rule(small, similar, "full", False, f"{size} and {sim}: fine-tune everything")


def stratified_sample(samples: list[tuple[str, int]], limit: int, seed: int) -> list[tuple[str, int]]:
    """At most ``limit`` samples, every class keeping its share."""
    if len(samples) <= limit:
        return list(samples)
    kept, _ = train_test_split(samples, train_size=limit, stratify=[y for _, y in samples], random_state=seed)
    return kept


def score_backbone(
    name: str, root: Path, samples: list[tuple[str, int]], seed: int, device: torch.device | None = None
) -> tuple[Backbone, list[Candidate], dict[int | None, np.ndarray], np.ndarray]:
    """LogME and probe accuracy of every cut point of one backbone on ``samples``, its features computed on ``device``."""
    torch.manual_seed(seed)  # a backbone with random weights (smallcnn) scores the same on every run
    backbone, cuts, labels = cut_features(name, root, samples, device)
    candidates = [
        Candidate(name, layer, int(f.shape[1]), round(logme(f, labels), 4), round(probe_accuracy(f, labels, seed=seed), 4), fittable)
        for layer, (f, fittable) in cuts.items()
    ]
    return backbone, candidates, {layer: f for layer, (f, _) in cuts.items()}, labels


def bootstrap_wins(first: np.ndarray, second: np.ndarray, labels: np.ndarray, seed: int, rounds: int = BOOTSTRAP) -> float:
    """Share of bootstrap resamples of the images on which ``first`` still scores above ``second``.

    The sampling noise of the score itself: a ranking that flips on a third of the resamples rests on the
    particular images drawn, not on the backbones.
    """
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(rounds):
        index = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[index])) < len(np.unique(labels)):
            index = np.arange(len(labels))
        wins += logme(first[index], labels[index]) > logme(second[index], labels[index])
    return wins / rounds


def _sureness(gap_share: float, wins: float | None) -> str:
    if wins is None:
        return "only one backbone was scored, so there was no choice to be sure of"
    words = "clear" if gap_share >= 0.25 and wins >= 0.9 else "narrow" if wins >= 0.7 else "a toss-up"
    return (
        f"{words}: the top backbone leads the runner-up by {gap_share:.0%} of the score spread and stays on top in "
        f"{wins:.0%} of {BOOTSTRAP} bootstrap resamples of the images; LogME tracks fine-tuned accuracy as a prior, not an oracle"
    )


def advise(
    data: str,
    backbones: list[str],
    *,
    classes: str | None = None,
    max_images: int = MAX_IMAGES,
    seed: int = 0,
    split: Split | None = None,
    device: str = "auto",
) -> Advice:
    """Score every cut point of every backbone on a sample of ``data`` and recommend what to train.

    ``split`` (default: the seeded split ``graft fit`` makes) says which images are the training part:
    a benchmark that trains on fewer images per class passes its own, so the size axis sees what training will.
    The backbones run on ``device`` (:mod:`graft.device`); the scores are computed from their features on the CPU.
    """
    backbones = list(dict.fromkeys(backbones))  # a candidate named twice is scored once
    if not backbones:
        raise GraftError("--backbones is empty; give one or more backbones, e.g. smallcnn,runs/digits-0to6")
    if max_images < 10:
        raise GraftError(f"--max-images {max_images} is too few to score anything; give at least 10 (default {MAX_IMAGES})")
    target = resolve_device(device)
    split = split or make_split(load_data(data, classes), seed=seed)
    counts = Counter(split.classes[y] for _, y in [*split.train, *split.val, *split.test])
    per_class = len(split.train) / len(split.classes)
    sample = stratified_sample(split.train, max_images, seed)
    log(f"scoring {len(backbones)} backbone(s) on {len(sample)} of {len(split.train)} training images")

    candidates: list[Candidate] = []
    best_features: dict[str, np.ndarray] = {}
    similarities: dict[str, float | None] = {}
    labels = np.empty(0)
    for name in backbones:
        backbone, own, cuts, labels = score_backbone(name, Path(split.root), sample, seed, target)
        candidates.extend(own)
        # a randomly initialised backbone has no source domain to be similar to
        similarities[name] = round(similarity(own, len(split.classes)), 4) if backbone.spec.get("weights") not in (None, RANDOM) else None
        top = max(own, key=lambda c: c.score)
        best_features[name] = cuts[top.layer]
        log(f"  {name}: best LogME {top.score:.3f} at {top.layer_name}, similarity {similarities[name]}")

    best_of = {name: max((c for c in candidates if c.backbone == name), key=lambda c: c.score) for name in backbones}
    ranked = sorted(best_of.values(), key=lambda c: c.score, reverse=True)
    chosen = ranked[0].backbone
    applied = rule(per_class, similarities[chosen])
    own = [c for c in candidates if c.backbone == chosen]
    layer, about_layer = _layer(own, applied)
    confidence = _confidence(ranked, candidates, best_features, labels, seed)
    reason = f"{chosen} scores highest (LogME {ranked[0].score:.3f}); {applied.sentence}{about_layer}"
    recommendation = {
        "backbone": chosen,
        "layer": layer.layer,
        "strategy": applied.strategy,
        "reason": reason,
        "small": applied.small,
        "similar": applied.similar,
        "similarity": similarities[chosen],
        "train_images_per_class": round(per_class, 1),
    }
    return Advice(
        data={
            "data": data,
            "selection": classes,
            "classes": split.classes,
            "images": sum(counts.values()),
            "images_per_class": {c: counts[c] for c in split.classes},
            "train_images": len(split.train),
            "sampled_images": len(sample),
            "probe_metric": probe_metric(labels),  # what probe_accuracy measures: balanced accuracy where the classes are uneven
        },
        candidates=candidates,
        similarity=similarities,
        recommendation=recommendation,
        confidence=confidence,
    )


def _layer(own: list[Candidate], applied: Rule) -> tuple[Candidate, str]:
    """The cut to train, and what to add to the reason about it.

    The output for "similar" or for fine-tuning. For "small and different", the best-scoring earlier cut
    among those that probe better than the output (that is what made the data "different") and that
    ``graft fit`` can train; a backbone it cannot cut keeps its output, and the reason says so.
    """
    final = next(c for c in own if c.layer is FINAL)
    if not applied.earlier_layer:
        return final, ""
    better = [c for c in own if c.layer is not FINAL and c.probe_accuracy > final.probe_accuracy] or [
        c for c in own if c.layer is not FINAL
    ]
    fittable = [c for c in better if c.fittable]
    if fittable:
        chosen = max(fittable, key=lambda c: c.score)
        return chosen, f", of which {chosen.layer_name} scores highest"
    if better:
        return final, f"; graft fit cannot cut {final.backbone} (--layer takes timm models), so its output features it is"
    return final, ""


def _confidence(
    ranked: list[Candidate], candidates: list[Candidate], best_features: dict[str, np.ndarray], labels: np.ndarray, seed: int
) -> dict[str, Any]:
    """How sure the backbone choice is: the score gap to the runner-up against the spread, and a bootstrap."""
    if len(ranked) < 2:
        return {"gap_share": None, "bootstrap_wins": None, "summary": _sureness(0.0, None)}
    scores = [c.score for c in candidates]
    spread = max(scores) - min(scores)
    gap_share = (ranked[0].score - ranked[1].score) / spread if spread > 0 else 0.0
    wins = bootstrap_wins(best_features[ranked[0].backbone], best_features[ranked[1].backbone], labels, seed)
    return {
        "gap_share": round(gap_share, 4),
        "bootstrap_wins": wins,
        "runner_up": ranked[1].backbone,
        "summary": _sureness(gap_share, wins),
    }


def fit_command(advice: Advice) -> list[str]:
    """The ``graft fit`` arguments that train the recommendation (printed, and what ``--run`` does)."""
    rec = advice.recommendation
    args = ["graft", "fit", advice.data["data"], "--backbone", rec["backbone"], "--strategy", rec["strategy"]]
    if advice.data["selection"]:
        args += ["--classes", advice.data["selection"]]
    if rec["layer"] is not FINAL:
        args += ["--layer", str(rec["layer"])]
    return args


def run_recommendation(advice: Advice, seed: int = 0, device: str = "auto") -> api.Run:
    """Train what ``advice`` recommends with :func:`graft.api.fit`, on the split the advice sampled from, on ``device``."""
    rec = advice.recommendation
    return api.fit(
        advice.data["data"],
        classes=advice.data["selection"],
        backbone=rec["backbone"],
        strategy=rec["strategy"],
        layer=rec["layer"],
        seed=seed,
        device=device,
    )
