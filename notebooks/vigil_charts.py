"""Small matplotlib helpers shared by the analyst notebooks.

Charts show IDs, counts, scores and categories only: every helper takes a DataFrame of
aggregates from `vigil_exports`, never text.
"""

from __future__ import annotations

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
import pandas as pd

#: Colours used with one meaning across the notebooks.
HARMFUL = "tab:red"
BENIGN = "tab:gray"
UNSCORED = "tab:olive"


def style() -> None:
    """The notebooks' chart defaults: readable sizes, no top/right frame."""
    plt.rcParams.update({
        "figure.dpi": 100,
        "figure.figsize": (10, 4),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titleweight": "bold",
        "legend.frameon": False,
    })


def time_axis(ax) -> None:
    """Compact date labels on the x axis (`20 Nov`, `06:00`, ...)."""
    locator = mdates.AutoDateLocator(maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def whole_numbers(ax, axis: str = "y") -> None:
    """Ticks at whole numbers only, for axes that count things."""
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_locator(MaxNLocator(integer=True))


def label_bars(ax, bars, labels, inside: bool = False) -> None:
    """Writes `labels` at the end of horizontal `bars`."""
    for bar, text in zip(bars, labels):
        x = bar.get_x() + bar.get_width()
        ax.annotate(
            text, (x, bar.get_y() + bar.get_height() / 2), xytext=(-3 if inside else 3, 0),
            textcoords="offset points", va="center", ha="right" if inside else "left", fontsize=8,
        )


def heatmap(table: pd.DataFrame, title: str, fmt: str = "{:.0f}", cmap: str = "Reds",
            vmin: float | None = None, vmax: float | None = None, ax=None):
    """`table` (rows x columns of numbers) as a coloured grid with each value written in."""
    values = table.to_numpy(dtype=float)
    if ax is None:
        width = max(4.0, 0.9 * table.shape[1] + 3.0)
        _, ax = plt.subplots(figsize=(width, 0.38 * table.shape[0] + 1.6))
    image = ax.imshow(values, cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=30, ha="right")
    ax.set_yticks(range(table.shape[0]), [str(i) for i in table.index])
    ax.spines[:].set_visible(False)
    high = np.nanmax(values) if values.size and not np.isnan(values).all() else 0.0
    top = vmax if vmax is not None else high
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            dark = top and value > 0.6 * top
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.figure.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    ax.set_title(title)
    return ax


#: Tick marks of duration axes: (seconds, label).
DURATION_TICKS = [(1, "1 s"), (10, "10 s"), (60, "1 min"), (600, "10 min"), (3600, "1 h"),
                  (6 * 3600, "6 h"), (86400, "1 day"), (7 * 86400, "1 week"), (30 * 86400, "30 days")]


def seconds(delta: pd.Series) -> pd.Series:
    """Durations (Timedelta) in seconds, floored at one second so they fit a log axis."""
    return delta.dt.total_seconds().clip(lower=1)


def duration_axis(ax, values: np.ndarray) -> None:
    """A log x axis of durations in seconds, labelled in s, min, h and days."""
    ax.set_xscale("log")
    low, high = max(float(np.min(values)), 1.0), max(float(np.max(values)), 1.0)
    ticks = [(t, label) for t, label in DURATION_TICKS if low / 10 <= t <= high * 10]
    ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks])
    ax.minorticks_off()


def readable(delta) -> str:
    """A Timedelta as `1d 02:03:04`, or an empty string when missing."""
    if pd.isna(delta):
        return ""
    return str(pd.Timedelta(delta).round("s")).replace("0 days ", "").replace(" days ", "d ")
