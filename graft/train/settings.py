"""How to train: one small dataclass, a comment on each default, checked in one place.

The run description (:class:`graft.config.FitConfig`) holds one of these; the trainer needs nothing else.
"""

from dataclasses import asdict, dataclass, fields
from typing import Any

from graft.data.transforms import AUGMENTATIONS
from graft.device import check_device
from graft.errors import GraftError
from graft.inference import PRECISIONS, compile_mode, resolve
from graft.model import HEADS
from graft.train.mixing import MIXES

CLASS_WEIGHTS = ("auto", "balanced", "none")
BATCHNORMS = ("frozen", "train")


@dataclass
class TrainSettings:
    epochs: int = 10  # per phase; early stopping usually ends sooner
    batch_size: int = 64
    lr: float = 1e-3  # AdamW learning rate of the new head (and of every layer when training from scratch)
    # transferred layers learn at lr times this; None: the strategy's own (finetune's last blocks and full: 1, the head's
    # rate; lpft and finetune --freeze-first: 0.1; docs/results.md, the fine-tuning recipe)
    backbone_lr_scale: float | None = None
    layer_decay: float = 1.0  # each transferred block learns this much slower than the next (1: all alike; timm --layer-decay)
    weight_decay: float = 1e-4
    patience: int = 3  # stop a phase after this many epochs without a better validation score (graft.train.recipe)
    seed: int = 0  # seeds the split, weights, shuffling and augmentation: same seed, same run
    augment: str = "none"  # none | light | strong | trivial | trivial-flip (graft.data.transforms), training images only
    # none | mixup | cutmix | mixup-cutmix (one of the two a batch): each training batch blended with a shuffled copy of
    # itself, labels alike (graft.train.mixing); images only, so the features strategy's cached inputs never mix
    mix: str = "none"
    head: str = "linear"  # linear | mlp (dense 128 + ReLU + dropout + dense)
    workers: int = 0  # DataLoader worker processes; 0 decodes in the main process
    label_smoothing: float = 0.0
    # stochastic depth: residual branches of trained blocks dropped at random, up to this rate in the last block (timm's
    # --drop-path; graft.backbones.droppath); 0: off
    drop_path: float = 0.0
    # frozen: BatchNorm layers keep their pretrained running statistics even in layers that train (scale and shift
    # still learn; Keras' fine-tuning guide's training=False; graft.train.trainer.pretrained_batchnorms) | train:
    # BatchNorm in trained layers normalises by each batch and updates its running statistics
    batchnorm: str = "frozen"
    image_size: int | None = None  # square input side in pixels; None: the backbone's own (224 for lite0)
    # progressive resizing: where a phase feeds images to the network every epoch, its first half of epochs trains at 0.7
    # of the side and the last at the full side (graft.train.resolution); validation always at the full side
    progressive: bool = False
    # also evaluate a moving average of the weights (True: decay 0.999, warmed up), kept where it scores better; off by
    # default: under OneCycle's annealing it was never better than the best epoch (docs/results.md, the fine-tuning recipe)
    ema: bool | float = False
    precision: str = "auto"  # auto | int8 | bf16 | fp32 (graft.inference): auto is bf16 where the CPU computes it natively
    per_class: int | None = None  # keep at most this many training images a class (validation/test unchanged)
    # auto: where the training classes are uneven (largest/smallest >= 1.5), the decisions moved towards the rare ones after
    # training, by as much as scores best on validation (graft.train.adjustment) | balanced: class-weighted loss | none
    class_weight: str = "auto"
    device: str = "auto"  # auto (CUDA, then Apple MPS, then the CPU) | cpu | cuda | cuda:N | mps (graft.device)

    @property
    def varies_inputs(self) -> bool:
        """Whether an image's input differs from epoch to epoch (augmentation or mixing): then nothing computed from
        the images can be kept across epochs."""
        return self.augment != "none" or self.mix != "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainSettings":
        """Settings from a dict; a key that is not a setting is an error, not silently dropped."""
        names = {f.name for f in fields(cls)}
        if unknown := sorted(set(raw) - names):
            raise GraftError(f"unknown training setting(s) {', '.join(unknown)}; the settings are {', '.join(sorted(names))}")
        return cls(**raw)

    def validate(self) -> "TrainSettings":
        """Every value in its range, checked before any work starts; returns ``self``."""
        _check(self.epochs, int, "--epochs", minimum=1)
        _check(self.batch_size, int, "--batch-size", minimum=1)
        _check(self.lr, float, "--lr", above=0)
        if self.backbone_lr_scale is not None:
            _check(self.backbone_lr_scale, float, "backbone_lr_scale", minimum=0)
        _check(self.layer_decay, float, "--layer-decay", above=0)
        if self.layer_decay > 1:
            raise GraftError(f"--layer-decay {self.layer_decay} is out of range; give a value in (0, 1] (1: every block alike)")
        _check(self.weight_decay, float, "weight_decay", minimum=0)
        _check(self.patience, int, "patience", minimum=1)
        _check(self.seed, int, "--seed", minimum=0)
        _check(self.workers, int, "--workers", minimum=0)
        _check(self.label_smoothing, float, "label_smoothing", minimum=0)
        if self.label_smoothing >= 1:
            raise GraftError(f"label_smoothing {self.label_smoothing} must be below 1")
        _check(self.drop_path, float, "--drop-path", minimum=0)
        if self.drop_path >= 1:
            raise GraftError(f"--drop-path {self.drop_path} must be below 1 (the chance a residual branch is dropped)")
        if not isinstance(self.progressive, bool):
            raise GraftError(f"progressive must be true or false, got {self.progressive!r}")
        if not isinstance(self.ema, bool):
            _check(self.ema, float, "ema", above=0)
            if self.ema >= 1:
                raise GraftError(f"--ema {self.ema} must be a decay below 1, or on or off")
        if self.image_size is not None:
            _check(self.image_size, int, "--image-size", minimum=16)
        if self.per_class is not None:
            _check(self.per_class, int, "--per-class", minimum=1)
        _choice(self.augment, AUGMENTATIONS, "--augment")
        _choice(self.mix, MIXES, "--mix")
        _choice(self.head, HEADS, "--head")
        _choice(self.precision, PRECISIONS, "--precision")
        _choice(self.class_weight, CLASS_WEIGHTS, "--class-weight")
        _choice(self.batchnorm, BATCHNORMS, "--batchnorm")
        if self.precision == "int8" and compile_mode() == "off":
            raise GraftError(
                "--precision int8 runs through a compiled network; drop --compile off (or GRAFT_COMPILE=off), or choose bf16 or fp32"
            )
        resolve(self.precision, check_device(self.device))  # a device this machine lacks, or int8 off the CPU
        return self


def ema_setting(text: str | None) -> bool | float | None:
    """The ``ema`` setting from the command line: ``on``/``off`` or a decay; ``None`` stays "not given"."""
    if text is None:
        return None
    if text.lower() in ("on", "true", "yes"):
        return True
    if text.lower() in ("off", "false", "no"):
        return False
    try:
        return float(text)
    except ValueError:
        raise GraftError(f"--ema '{text}' is not on, off or a decay such as 0.99") from None


def _check(value: Any, kind: type, name: str, minimum: float | None = None, above: float | None = None) -> None:
    """``value`` is a number of ``kind`` (an int passes for a float, a bool never) within its bound."""
    accepted = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise GraftError(f"{name} must be {'a number' if kind is float else 'a whole number'}, got {value!r}")
    if minimum is not None and value < minimum:
        raise GraftError(f"{name} {value} is out of range; give at least {minimum:g}")
    if above is not None and value <= above:
        raise GraftError(f"{name} {value} is out of range; give a value above {above:g}")


def _choice(value: Any, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise GraftError(f"unknown {name} '{value}'; choose {', '.join(choices)}")
