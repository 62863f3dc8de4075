"""The report's charts, made with plotly: each function returns one figure as an HTML fragment.

The fragments carry no plotly.js of their own; the page inlines it once (see :mod:`graft.report.page`),
so a report with many charts stays one self-contained file that opens offline.
"""

from collections.abc import Sequence
from typing import Any

import plotly.express as px
import plotly.graph_objects as go
from markupsafe import Markup
from plotly.subplots import make_subplots

COLORS = px.colors.qualitative.Safe  # colour-blind-safe, distinct in print too
TRAIN, VAL = COLORS[0], COLORS[1]
ACCURACY_RANGE = {"minallowed": 0, "maxallowed": 1}  # zoom to the data, never past 0% or 100%
CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png", "scale": 2}}


def _html(fig: go.Figure, chart_id: str) -> Markup:
    """The figure as a ``<div id="chart-ID">`` plus the script that draws it (the prefix keeps ids unique on the page)."""
    fig.update_layout(
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        font={"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "xanchor": "left", "x": 0},
    )
    return Markup(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{chart_id}", config=CONFIG))


def learning_curves(records: Sequence[dict[str, Any]], chart_id: str = "learning-curves") -> Markup:
    """Train and validation loss and accuracy per epoch, epochs numbered across phases.

    A strategy with several phases (e.g. head first, then the whole network) gets a dotted line where
    each new phase starts, since the curves often jump there.
    """
    epochs = list(range(1, len(records) + 1))
    hover = [f"{r['phase']} epoch {r['epoch']}" for r in records]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"), horizontal_spacing=0.1)
    for col, metric in ((1, "loss"), (2, "accuracy")):
        for part, color in (("train", TRAIN), ("val", VAL)):
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=[r[f"{part}_{metric}"] for r in records],
                    name=part,
                    legendgroup=part,
                    showlegend=col == 1,
                    mode="lines+markers",
                    line={"color": color, "width": 2},
                    text=hover,
                    hovertemplate="%{text}<br>"
                    + part
                    + f" {metric}: "
                    + ("%{y:.2%}" if metric == "accuracy" else "%{y:.4f}")
                    + "<extra></extra>",
                ),
                row=1,
                col=col,
            )
    for i in range(1, len(records)):
        if records[i]["phase"] != records[i - 1]["phase"]:
            fig.add_vline(
                x=i + 0.5, line_dash="dot", line_color="#888", annotation_text=records[i]["phase"], annotation_position="top left"
            )
    fig.update_xaxes(title_text="epoch", dtick=1 if len(records) <= 20 else None)
    fig.update_yaxes(rangemode="nonnegative", row=1, col=1)
    fig.update_yaxes(tickformat=".0%", autorangeoptions=ACCURACY_RANGE, row=1, col=2)
    fig.update_layout(height=360)
    return _html(fig, chart_id)


def confusion_matrix(matrix: list[list[int]], classes: list[str], chart_id: str = "confusion-matrix") -> Markup:
    """Counts of test images by true (rows) and predicted (columns) class; the diagonal is right."""
    fig = px.imshow(
        matrix,
        x=classes,
        y=classes,
        text_auto=len(classes) <= 30,
        color_continuous_scale="Blues",
        labels={"x": "predicted", "y": "true", "color": "images"},
        aspect="auto",
    )
    fig.update_xaxes(side="bottom", type="category")
    fig.update_yaxes(type="category")
    fig.update_layout(height=min(900, max(360, 28 * len(classes) + 160)))
    return _html(fig, chart_id)


def per_class(rows: list[dict[str, Any]], chart_id: str = "per-class") -> Markup:
    """Precision and recall side by side for every class: which classes the model confuses, and how."""
    classes = [r["class"] for r in rows]
    fig = go.Figure(
        [
            go.Bar(
                name=metric,
                x=classes,
                y=[r[metric] for r in rows],
                marker_color=color,
                hovertemplate="%{x}: %{y:.2%}<extra>" + metric + "</extra>",
            )
            for metric, color in (("precision", TRAIN), ("recall", VAL))
        ]
    )
    fig.update_layout(barmode="group", height=340, yaxis={"tickformat": ".0%", "range": [0, 1.02]})
    fig.update_xaxes(type="category")
    return _html(fig, chart_id)


def accuracy_vs_time(rows: list[dict[str, Any]], chart_id: str = "accuracy-vs-time") -> Markup:
    """One point per strategy: test accuracy against training seconds, the trade-off a comparison is about.

    The time axis turns logarithmic when strategies differ by more than 20x, so the fast ones do not
    collapse onto the axis.
    """
    seconds = [max(r["train_seconds"], 1e-3) for r in rows]
    fig = go.Figure()
    for i, (row, secs) in enumerate(zip(rows, seconds, strict=True)):
        fig.add_trace(
            go.Scatter(
                x=[secs],
                y=[row["test_accuracy"]],
                name=row["strategy"],
                mode="markers+text",
                text=[row["strategy"]],
                textposition="top center",
                marker={"size": 16, "color": COLORS[i % len(COLORS)], "line": {"width": 1, "color": "#333"}},
                customdata=[[row["epochs"], row["trainable_params"], row["peak_memory_mb"]]],
                hovertemplate=(
                    f"<b>{row['strategy']}</b><br>test accuracy %{{y:.2%}}<br>%{{x:.1f}} s training<br>"
                    "%{customdata[0]} epochs · %{customdata[1]:,} trainable params<br>peak memory %{customdata[2]:.0f} MiB<extra></extra>"
                ),
            )
        )
    accuracies = [r["test_accuracy"] for r in rows]
    log_x = max(seconds) / min(seconds) > 20
    fig.update_xaxes(
        title_text="training time (seconds" + (", log scale)" if log_x else ")"), type="log" if log_x else "linear", rangemode="tozero"
    )
    # zoomed to the points (strategies often differ by a point or two) but never below 0% or above 100%
    fig.update_yaxes(
        title_text="test accuracy", tickformat=".1%", range=[max(0.0, min(accuracies) - 0.05), min(1.0, max(accuracies) + 0.03)]
    )
    fig.update_layout(height=400, showlegend=False)
    return _html(fig, chart_id)


def validation_by_strategy(histories: dict[str, list[dict[str, Any]]], chart_id: str = "val-accuracy") -> Markup:
    """Validation accuracy per epoch, one line per strategy, to see which learns faster and which overfits."""
    fig = go.Figure(
        [
            go.Scatter(
                x=list(range(1, len(records) + 1)),
                y=[r["val_accuracy"] for r in records],
                name=name,
                mode="lines+markers",
                line={"color": COLORS[i % len(COLORS)], "width": 2},
                hovertemplate=name + " epoch %{x}: %{y:.2%}<extra></extra>",
            )
            for i, (name, records) in enumerate(histories.items())
        ]
    )
    fig.update_xaxes(title_text="epoch", dtick=1 if max(map(len, histories.values()), default=0) <= 20 else None)
    fig.update_yaxes(title_text="validation accuracy", tickformat=".0%", autorangeoptions=ACCURACY_RANGE)
    fig.update_layout(height=360)
    return _html(fig, chart_id)
