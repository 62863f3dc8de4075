"""graft: transfer learning for image classifiers, from a folder of labelled images to an exported model.

    >>> import graft
    >>> run = graft.fit("photos/", strategy="finetune", epochs=5)  # doctest: +SKIP
    >>> run.test_accuracy, run.path  # doctest: +SKIP
    >>> run.predict(["a.jpg"])  # doctest: +SKIP

The data flows one way: ``data`` -> ``backbones`` / ``sources`` -> ``strategies`` -> ``train`` -> run
directory (``rundir``) -> ``evaluation`` / ``report`` / ``export``; :mod:`graft.api` puts a face on it and
:mod:`graft.cli` is a thin layer over that face.
"""

from graft.advice import Advice, advise
from graft.api import Run, fit, load, resume
from graft.auto import AutoResult, auto
from graft.comparison import compare
from graft.config import FitConfig
from graft.data.split import Split, make_split
from graft.errors import GraftError
from graft.evaluation import Evaluation, Prediction
from graft.model import GraftModel
from graft.results import RunResult
from graft.sources import create_backbone
from graft.strategies import STRATEGIES, Strategy, get_strategy
from graft.train.settings import TrainSettings
from graft.train.trainer import TrainResult, train_model
from graft.version import __version__

__all__ = [
    "STRATEGIES",
    "Advice",
    "AutoResult",
    "Evaluation",
    "FitConfig",
    "GraftError",
    "GraftModel",
    "Prediction",
    "Run",
    "RunResult",
    "Split",
    "Strategy",
    "TrainResult",
    "TrainSettings",
    "__version__",
    "advise",
    "auto",
    "compare",
    "create_backbone",
    "fit",
    "get_strategy",
    "load",
    "make_split",
    "resume",
    "train_model",
]
