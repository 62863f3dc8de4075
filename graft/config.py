"""The run description: one object says what a fit is, everywhere.

The CLI builds a :class:`FitConfig` from its options, the Python API from keyword arguments; it is
validated once (:meth:`FitConfig.validate`), written into the run directory's ``config.json``, stored in
every checkpoint, and read back by ``graft resume``. Nothing else re-describes a run, so a check made
here holds for every way of starting one.
"""

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from graft.backbones import DEFAULT_BACKBONE
from graft.data.imageset import BAD_IMAGE_POLICIES
from graft.errors import GraftError
from graft.strategies import STRATEGIES, every_strategy_option, get_strategy, strategy_options
from graft.strategies.base import Strategy
from graft.train.settings import TrainSettings
from graft.tta import FIT_TTAS


@dataclass(frozen=True)
class FitConfig:
    """What to fit: the data, the source model, the strategy and how to train.

    Build one with :meth:`create` (flat keyword options, as the CLI has them); every field has the
    default a user gets from ``graft fit DATA``.
    """

    data: str  # an image folder, a CSV of path,label rows, or a built-in data set name
    classes: str | None = None  # e.g. "7-9" or "cat,dog"; labels are re-indexed in this order
    backbone: str = DEFAULT_BACKBONE  # a timm name, "smallcnn", or a graft run directory
    weights: str | None = None  # a weights file, or "random"; None: the backbone's own (offline package, hub)
    layer: int | None = None  # cut a timm backbone after this stage
    strategy: str = "frozen"
    strategy_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"unfreeze": 2} for finetune
    settings: TrainSettings = field(default_factory=TrainSettings)
    bad_images: str = "skip"  # skip: leave unreadable images out (listed); fail: stop at the first
    tta: str = "none"  # test-time augmentation (graft.tta): none | flip | auto (flip where it scores higher on validation)

    @classmethod
    def create(cls, data: str, *, settings: TrainSettings | None = None, **options: Any) -> "FitConfig":
        """A validated config from flat options: ``FitConfig.create("photos/", strategy="finetune", unfreeze=2, epochs=5)``.

        Each option is a field of this class, a training setting (:class:`TrainSettings`: ``epochs``,
        ``lr``...) or an option of the chosen strategy (``unfreeze``); ``None`` means "the default".
        ``settings`` gives every training setting at once; single settings given beside it win.
        """
        own = {f.name for f in fields(cls)} - {"data", "settings", "strategy_options"}
        trained = {f.name for f in fields(TrainSettings)}
        given = {k: v for k, v in options.items() if v is not None}
        top = {k: v for k, v in given.items() if k in own}
        training = {k: v for k, v in given.items() if k in trained}
        rest = {k: v for k, v in given.items() if k not in own and k not in trained}
        strategy = top.get("strategy", cls.strategy)
        known = strategy_options(strategy) if strategy in STRATEGIES else []
        if unknown := [k for k in rest if k not in known and k not in every_strategy_option()]:
            names = sorted(own | trained | every_strategy_option())
            raise GraftError(f"unknown option '{unknown[0]}'; the options are {', '.join(names)}")
        base = settings if settings is not None else TrainSettings()
        merged = replace(base, **training)
        return cls(data=str(data), settings=merged, strategy_options=rest, **top).validate()

    def validate(self) -> "FitConfig":
        """Check every value before any work starts (one line naming the option and the fix); returns ``self``."""
        if not isinstance(self.data, str) or not self.data:
            raise GraftError("no data given; name an image folder, a CSV of path,label rows, or a built-in data set")
        if self.bad_images not in BAD_IMAGE_POLICIES:
            raise GraftError(f"unknown --bad-images policy '{self.bad_images}'; choose {', '.join(BAD_IMAGE_POLICIES)}")
        if self.tta not in FIT_TTAS:
            raise GraftError(f"unknown --tta '{self.tta}'; choose {', '.join(FIT_TTAS)}")
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise GraftError(f"--layer must be a whole number (a stage index), got {self.layer!r}")
        self.settings.validate()
        self.build_strategy()
        return self

    def build_strategy(self) -> Strategy:
        """The strategy with its options (an option it does not take is an error)."""
        return get_strategy(self.strategy, **self.strategy_options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: what ``config.json`` and checkpoints hold."""
        own = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**own, "strategy_options": dict(self.strategy_options), "settings": self.settings.to_dict()}

    @classmethod
    def from_dict(cls, raw: Any) -> "FitConfig":
        """The config :meth:`to_dict` wrote; a :class:`GraftError` for anything that is not one."""
        if not isinstance(raw, dict) or not isinstance(raw.get("settings"), dict):
            raise GraftError("the saved run description is not a graft fit config; start the run again")
        names = {f.name for f in fields(cls)}
        if unknown := sorted(set(raw) - names):
            raise GraftError(f"the saved run description has unknown field(s) {', '.join(unknown)}; it was made by another graft version")
        try:
            values = {
                **raw,
                "settings": TrainSettings.from_dict(raw["settings"]),
                "strategy_options": dict(raw.get("strategy_options") or {}),
            }
            return cls(**values).validate()
        except TypeError as exc:
            raise GraftError(f"the saved run description is incomplete ({exc}); start the run again") from exc

    def name(self) -> str:
        """A short name for the run's default folder: ``photos-finetune``."""
        return f"{Path(self.data).name or 'data'}-{self.strategy}"
