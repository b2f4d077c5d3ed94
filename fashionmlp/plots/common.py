"""Small helpers every figure uses: words and numbers as a reader should see them, and a moving average."""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

Draw = TypeVar("Draw", bound=Callable)


def literal_text(draw: Draw) -> Draw:
    """A figure function whose text is drawn as written. matplotlib reads text between two $ signs as TeX math:
    a run named 'x$^$' trained, then failed to draw its loss curve (and again on every --resume), leaving the
    run unfinished; a name with two $ signs had part of it drawn as a formula. The tool writes no math of its
    own; the tick labels keep theirs (a log axis labels 10^-3 so)."""

    @functools.wraps(draw)
    def drawn(*args, **kwargs):
        figure = draw(*args, **kwargs)
        for text in _texts_beside_ticks(figure):
            text.set_parse_math(False)
        return figure

    return drawn  # type: ignore[return-value]


def _texts_beside_ticks(artist):
    """Every Text under `artist` except an axis's tick labels and offset text (walking into an axis would make it
    lay out its ticks: that cost 0.04 s a figure)."""
    from matplotlib.axis import Axis
    from matplotlib.text import Text

    for child in artist.get_children():
        if isinstance(child, Axis):
            yield child.label
            continue
        if isinstance(child, Text):
            yield child
        yield from _texts_beside_ticks(child)


def loss_text(value: float, digits: int = 4) -> str:
    """A loss to `digits` decimals, or in powers of ten when huge (a diverging run's 165993889459.1361 is
    1.66e+11: lr 50 printed a 100-digit number, and a table cut it to '16599388945...')."""
    return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.{digits}g}"


def plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def percent(p: float, digits: int = 2) -> str:
    """A probability as a percentage that reads 100% only when it is exactly 1, and 0% only when it is 0
    (0.99997 is '>99.99%', not '100.00%')."""
    text = f"{p:.{digits}%}"
    if p < 1 and text == f"{1:.{digits}%}":
        return f">{1 - 10 ** -(digits + 2):.{digits}%}"
    if p > 0 and text == f"{0:.{digits}%}":
        return f"<{10 ** -(digits + 2):.{digits}%}"
    return text


def fit(text: str, figure, fontsize: float = 12, share: float = 1.0) -> str:
    """`text` wrapped into lines that fit `share` of the figure's width at `fontsize` (a run's name can be 200
    characters: on one line its title ran off both sides of the picture); each of its own lines wrapped apart."""
    width = max(20, int(share * figure.get_figwidth() * 72 / (0.62 * fontsize)))  # ~0.62 em per character
    return "\n".join(textwrap.fill(line, width) or line for line in text.split("\n"))


def legend_below(figure, handles: list | None = None, labels: list[str] | None = None, max_cols: int = 6,
                 fontsize: float = 8, wrap: int = 70):
    """A legend below the panels in as many columns (up to `max_cols`) as fit the figure's width, each label wrapped
    at `wrap` characters: with fixed columns, an 8-variant study's long names ran off both sides of the picture
    and no line could be told from another."""
    if handles is None:
        handles, labels = [], []
        for ax in figure.axes:
            h, lab = ax.get_legend_handles_labels()
            handles, labels = handles + h, labels + lab
    labels = [textwrap.fill(label, wrap) for label in labels]
    cols = max(1, min(max_cols, len(labels)))
    while True:
        legend = figure.legend(handles, labels, loc="outside lower center", ncols=cols, fontsize=fontsize)
        for text in legend.get_texts():  # literal (see literal_text) before measuring: 'x$^$' is not TeX
            text.set_parse_math(False)
        if cols == 1 or legend.get_window_extent().width <= 0.98 * figure.bbox.width:
            return legend
        legend.remove()
        cols -= 1


def first_distinct(labels: Callable[[int], list[str]], digits: range = range(3, 8),
                   exact: Sequence[float] = (), within: float = 0.0) -> list[str]:
    """labels(d) for the fewest digits d whose non-empty labels are all different (the most digits otherwise)
    and, with `exact`, each within `within` of its value there."""
    for d in digits:
        made = labels(d)
        shown = [label for label in made if label]
        if len(set(shown)) == len(shown) and all(abs(float(t) - x) <= within for t, x in zip(made, exact)):
            break
    return made


def plain_log_labels(axis) -> None:
    """A log-scale axis labelled with plain numbers (0.4, 2.25, 1000) instead of matplotlib's 4×10⁻¹ and
    2.25×10⁰, which a loss axis spanning less than a decade shows on every tick; which ticks get a label is
    still matplotlib's choice, except where its view (read now: call this after plotting) spans less than a
    factor of 3 (narrow_log_ticks)."""
    from matplotlib.ticker import LogFormatter

    low, high = sorted(axis.get_view_interval())
    if 0 < low and high < 3 * low:
        narrow_log_ticks(axis, 8)  # (a loss axis: upright, room for more labels than lr-find's x axis)
        return

    class Plain(LogFormatter):
        digits = 3

        def __call__(self, x, pos=None):
            if not super().__call__(x, pos) and not self._two_or_five(x):
                return ""
            return f"{x:.{self.digits}g}" if x < 1000 else f"{x:,.0f}" if x < 1e6 else f"{x:.0e}"  # not 33 digits

        def _two_or_five(self, x) -> bool:
            """Over 2 to 5 decades matplotlib labels no minor tick (a study's loss axis read 1, 10, 100, its
            useful curves between 0.17 and 1 unlabelled): 2 and 5 of each decade are, then."""
            if self.labelOnlyBase or self.axis is None or not x > 0:
                return False
            low, high = sorted(self.axis.get_view_interval())
            if not (low > 0 and 2 < math.log10(high / low) <= 5):
                return False
            return round(x / 10 ** math.floor(math.log10(x) + 1e-9), 6) in (2.0, 5.0)

        def format_ticks(self, values):
            """As many digits as tell the labelled ticks apart (3 labelled 1.555 and 1.565 both "1.56")."""
            self.set_locs(values)

            def labels(digits: int) -> list[str]:
                self.digits = digits
                return [self(x, i) for i, x in enumerate(values)]

            return first_distinct(labels)

    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def narrow_log_ticks(axis, most: int = 5) -> None:
    """A log axis spanning less than a factor of 3 is nearly linear, and its decade's ticks left it bare (a study's
    loss from 0.85 to 1.55 read only 1 and 0.9): about `most` evenly spaced ticks (1-2-2.5-5 steps), as many
    digits as tell them apart."""
    from matplotlib.ticker import Formatter, MaxNLocator, NullLocator

    class Distinct(Formatter):
        def __call__(self, x, pos=None):
            return f"{x:.3g}"

        def format_ticks(self, values):  # and each value said whole: 1.025e-12 read "1.02e-12", as if uneven
            step = float(np.min(np.diff(values))) if len(values) > 1 else math.inf
            return first_distinct(lambda digits: [f"{x:.{digits}g}" for x in values], range(3, 10), values,
                                  1e-3 * step)

    axis.set_major_locator(MaxNLocator(nbins=most, steps=[1, 2, 2.5, 5, 10], min_n_ticks=2))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(Distinct())


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def whole_epochs(axis) -> None:
    """Ticks at whole epochs, 1-2-5 steps (a short run read "0.5, 1.5"; integer ticks alone gave 0, 3, ... 18 for
    20 epochs), at least one tick (a one-epoch run)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10], min_n_ticks=1))
