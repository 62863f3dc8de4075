"""``report.html``: a run, a comparison or an experiment as one page to look at, not files to read.

:func:`write_report` picks the page from what the folder holds (``config.json``: a run;
``comparison.json``: a comparison; sub-folders of those: an experiment). :func:`after_run` and
:func:`after_comparison` are the hooks ``fit`` and ``compare`` call: a report that cannot be written costs
a one-line warning, never the finished run.
"""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from graft.console import log, warn
from graft.errors import GraftError
from graft.report.metrics import COMPARISON, REPORT
from graft.report.tensorboard import write_tensorboard
from graft.rundir import is_run_dir

if TYPE_CHECKING:  # the type alone: importing graft.evaluation here would load the inference stack for every report
    from graft.evaluation import Evaluation

__all__ = ["REPORT", "after_comparison", "after_experiment", "after_run", "tensorboard_events", "write_report", "write_tensorboard"]


def is_comparison_dir(path: Path) -> bool:
    return (Path(path) / COMPARISON).is_file()


def _parts(folder: Path) -> list[Path]:
    """An experiment's runs and comparisons: the sub-folders that have a page of their own."""
    if not folder.is_dir():
        raise GraftError(f"{folder} does not exist; give a run, comparison or experiment directory")
    parts = [p for p in sorted(folder.iterdir()) if p.is_dir() and (is_run_dir(p) or is_comparison_dir(p))]
    if not parts:
        raise GraftError(
            f"{folder} holds no graft run (config.json) or comparison (comparison.json); give a folder made by fit, compare or experiment"
        )
    return parts


def write_report(folder: Path, evaluation: "Evaluation | None" = None) -> Path:
    """Write ``folder/report.html`` (and the reports of the runs inside a comparison or experiment).

    ``evaluation``: a run's test figures with ``per_image``, where its caller has just made them (the end of
    a fit); the page is then made without reading the test images a second time.
    """
    from graft.report import pages  # plotly and jinja load only when a report is made

    folder = Path(folder)
    if is_run_dir(folder):
        return pages.run_page(folder, evaluation)
    if is_comparison_dir(folder):
        for run in pages.comparison_runs(folder):
            pages.run_page(run)
        return pages.comparison_page(folder)
    parts = _parts(folder)
    for part in parts:
        write_report(part)
    return pages.experiment_page(folder, parts)


def tensorboard_events(folder: Path) -> list[Path]:
    """TensorBoard events for a run, or for each run of a comparison (``graft report --tensorboard``)."""
    from graft.report import pages

    folder = Path(folder)
    if is_run_dir(folder):
        return [write_tensorboard(folder)]
    if is_comparison_dir(folder):
        return [write_tensorboard(run) for run in pages.comparison_runs(folder)]
    raise GraftError(f"{folder} is neither a run (config.json) nor a comparison (comparison.json); TensorBoard events are written per run")


def _safely(what: str, folder: Path, action: Callable[[Path], Path], retry: str) -> None:
    try:
        written = action(folder)
        log(f"{what}: {written}")
    except Exception as exc:  # noqa: BLE001 - the run is saved already; losing it to a report bug would be worse
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warn(f"could not write the {what} for {folder} ({type(exc).__name__}: {first}); retry with '{retry}'")


def after_run(run_dir: Path, *, report: bool = True, tensorboard: bool = False, evaluation: "Evaluation | None" = None) -> None:
    """The end of ``fit``: TensorBoard events and the run's report (from ``evaluation`` if given), each only warned about if it fails."""
    if tensorboard:
        _safely("TensorBoard events", run_dir, write_tensorboard, f"graft report {run_dir} --tensorboard")
    if report:
        _safely("report", run_dir, lambda folder: write_report(folder, evaluation), f"graft report {run_dir}")


def after_comparison(folder: Path, *, report: bool = True) -> None:
    """The end of ``compare``: the comparison page (the runs wrote their own pages as they finished)."""
    from graft.report import pages

    if report:
        _safely("report", folder, pages.comparison_page, f"graft report {folder}")


def after_experiment(folder: Path) -> None:
    """The end of ``experiment``: an index page linking the pages its fits and comparisons wrote."""
    from graft.report import pages

    _safely("report", folder, lambda f: pages.experiment_page(f, _parts(f)), f"graft report {folder}")
