"""The report's charts, as small SVG images that need nothing from the network.

One function per chart.  Each takes plain data (a
:class:`~gradadvisor.probe.ProbeResult`, rows of the layer table, a
confirmation dict) and returns a :class:`Chart`, or None when there is nothing
to draw; the HTML renderer decides where a chart goes and what to say instead.

Figures are built with :class:`matplotlib.figure.Figure` and saved straight to
SVG, never through ``pyplot``: rendering a report neither switches the user's
backend nor leaves figures open, and the style applies only inside
``rc_context``.  Text stays text (``svg.fonttype = 'none'``), which keeps a
chart to a few kilobytes and lets matplotlib escape layer names as XML.  The
report embeds each chart as an ``<img>`` with a ``data:`` URI, where a browser
runs no script and fetches nothing, so the SVG needs no cleaning.

Values that are NaN, infinite or (on a log scale) zero are masked out of the
lines before matplotlib sees them, and each chart's notes say what was left out.
"""

from __future__ import annotations

import dataclasses
import base64
import io
import math

import numpy as np

#: Matplotlib settings for every chart.
_STYLE = {
    "svg.fonttype": "none",
    # Element ids derive from this salt: the same data gives the same SVG text.
    "svg.hashsalt": "gradadvisor-report",
    "font.family": "sans-serif",
    # DejaVu is what matplotlib measures text with; browsers without it fall
    # back to narrower fonts, so labels never grow past the space laid out.
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": "#374151",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.6,
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "legend.frameon": False,
    "legend.fontsize": 9,
    "figure.facecolor": "white",
}
_WIDTH = 8.0
_HEIGHT = 3.6
#: Steps drawn one by one go from light to dark; the median is the dark line.
_STEP_COLORS = ("#93c5fd", "#3b82f6", "#1e3a8a")
_MEDIAN_COLOR = "#111827"
_PROBLEM_COLOR = "#b91c1c"
_GOOD_COLOR = "#15803d"
_MAX_POINTS = 240
_MAX_LABEL = 18
#: More layer names than this under an axis would overlap; every n-th is shown.
_MAX_TICK_LABELS = 20


@dataclasses.dataclass
class Chart:
    """One chart ready to embed: its SVG document and what it leaves out.

    Attributes:
        svg: The SVG document matplotlib wrote.
        notes: Sentences about values not drawn (NaN, infinite, zero).
        description: A text alternative saying what the chart shows.
    """

    svg: str
    notes: list
    description: str

    @property
    def src(self) -> str:
        """The chart as a ``data:`` URI for an ``<img>``: self-contained, and inert."""
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg.encode("utf-8")).decode("ascii")


def _floats(values) -> np.ndarray:
    """A float array from a list that may hold None or NaN strings from JSON."""
    out = []
    for value in [] if values is None else values:
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            out.append(math.nan)
    return np.asarray(out, dtype="float64")


def _loggable(values: np.ndarray) -> np.ndarray:
    """The values with NaN, infinities and non-positive entries masked as NaN."""
    values = np.array(values, dtype="float64")
    values[~np.isfinite(values) | (values <= 0)] = math.nan
    return values


def _label(text: str, limit: int = _MAX_LABEL) -> str:
    """A name safe for matplotlib text: no mathtext, no control characters, short."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    if len(text) > limit:
        # Keep both ends: names in one model often share a long prefix
        # ("encoder/block_1/...") and differ at the end.
        head = limit // 3
        text = text[:head] + "…" + text[len(text) - (limit - head - 1):]
    # A '$' pair would switch matplotlib to mathtext and mangle the name.
    return text.replace("$", r"\$")


def _spread(indices: list) -> list:
    """First, middle and last of ``indices`` (fewer when there are fewer)."""
    if not indices:
        return []
    picks = [indices[0], indices[len(indices) // 2], indices[-1]]
    return sorted(set(picks))


def _thin(length: int) -> np.ndarray:
    """At most ``_MAX_POINTS`` evenly spread indices, ends included."""
    if length <= _MAX_POINTS:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, _MAX_POINTS).round().astype(int))


def _ranges(indices) -> str:
    """``[0, 1, 2, 5]`` as ``'0–2, 5'``."""
    parts, start, previous = [], None, None
    for index in list(indices) + [None]:
        if start is None:
            start = previous = index
        elif index is not None and index == previous + 1:
            previous = index
        else:
            parts.append(f"{start}" if start == previous else f"{start}–{previous}")
            start = previous = index
    return ", ".join(parts)


def _names(names, limit: int = 4) -> str:
    names = list(names)
    if len(names) > limit:
        return ", ".join(names[:limit - 1]) + f" and {len(names) - limit + 1} more"
    return ", ".join(names)


def _figure(height: float = _HEIGHT):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(_WIDTH, height), layout="constrained")
    return figure, figure.add_subplot()


def _render(figure) -> str:
    """Save ``figure`` as a standalone SVG document.

    The report embeds it as an image (see :attr:`Chart.src`), where a browser
    runs no script and loads nothing the document names, whatever it holds.
    """
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _layer_ticks(axis, names: list) -> None:
    """Layer names under the x axis, slanted when many, thinned when too many to read."""
    every = max(1, math.ceil(len(names) / _MAX_TICK_LABELS))
    positions = list(range(0, len(names), every))
    if len(names) - 1 - positions[-1] > every // 2:
        positions.append(len(names) - 1)  # the output layer is always named
    slanted = len(names) > 6
    axis.set_xticks(positions, [_label(names[i]) for i in positions],
                    rotation=(45 if len(positions) > 12 else 35) if slanted else 0,
                    ha="right" if slanted else "center",
                    rotation_mode="anchor" if slanted else "default")
    axis.set_xlabel("layer (input → output)")


def _mark_problem(axis, position: float, text: str) -> None:
    """A dashed red line at ``position`` with ``text`` at the top of the plot.

    Call it after the x limits are set: the label goes on whichever side of
    the line has room, so it never runs off the plot.
    """
    from matplotlib.transforms import blended_transform_factory

    axis.axvline(position, color=_PROBLEM_COLOR, linestyle="--", linewidth=1.2, zorder=1)
    low, high = axis.get_xlim()
    right_half = position > low + 0.6 * (high - low)
    label = axis.text(position, 0.985, text + " " if right_half else " " + text,
                      color=_PROBLEM_COLOR, fontsize=9, fontweight="bold",
                      ha="right" if right_half else "left", va="top", zorder=5,
                      transform=blended_transform_factory(axis.transData, axis.transAxes))
    # Labels sit inside the plot; letting them steer the layout would shrink it.
    label.set_in_layout(False)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(value, _position=None) -> str:
    """``1e-05`` as ``10⁻⁵``: plain text, where matplotlib's default is mathtext.

    Parsing mathtext for every tick label was most of a report's rendering time.
    """
    if not value > 0:
        return ""
    exponent = math.log10(value)
    if abs(exponent - round(exponent)) > 1e-9:
        return ""
    return "10" + str(int(round(exponent))).translate(_SUPERSCRIPT)


def _log_y(axis) -> None:
    """A log y axis labelled with plain-text powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(FuncFormatter(_power_of_ten))
    axis.yaxis.set_minor_formatter(NullFormatter())


def _log_limits(axis, min_decades: float = 0.0, headroom: float = 0.0) -> None:
    """Widen a log y axis to ``min_decades`` and leave ``headroom`` of it free on top.

    The free band at the top holds the problem labels and NaN markers clear of
    the data; the minimum span keeps a flat, healthy curve looking flat
    instead of magnifying noise across the whole plot.
    """
    low, high = axis.get_ylim()
    if not (low > 0 and high > low):
        return
    span = math.log10(high / low)
    if span < min_decades:
        pad = (min_decades - span) / 2
        low, high = low / 10 ** pad, high * 10 ** pad
        span = min_decades
    if headroom:
        high *= 10 ** (span * headroom / (1 - headroom))
    axis.set_ylim(low, high)


def _step_lines(axis, x, matrix: np.ndarray, finite_rows: list):
    """Draw a few steps of ``matrix`` (steps x positions) and the median over finite steps.

    Without a single all-finite step, the median is taken per position over
    whatever finite values it has.

    Returns:
        The median line's values (NaN where nothing finite was measured).
    """
    dots = {"marker": "o", "markersize": 3} if len(x) <= 40 else {}
    shown = _spread(finite_rows)
    # With fewer steps to show, use the darker end of the ramp.
    for color, row in zip(_STEP_COLORS[len(_STEP_COLORS) - len(shown):], shown):
        axis.plot(x, _loggable(matrix[row]), color=color, linewidth=1.2, label=f"step {row}",
                  **dots)
    if finite_rows:
        median = np.median(matrix[finite_rows], axis=0)
        label = f"median of {len(finite_rows)} finite step{'s' if len(finite_rows) != 1 else ''}"
    else:
        with np.errstate(all="ignore"):
            masked = np.where(np.isfinite(matrix), matrix, math.nan)
            median = np.array([np.nanmedian(c) if np.isfinite(c).any() else math.nan
                               for c in masked.T])
        label = "median of the finite values"
    axis.plot(x, _loggable(median), color=_MEDIAN_COLOR, linewidth=2.4, label=label, zorder=4)
    return median


def _matrix(rows, width: int) -> np.ndarray:
    """Rows of unequal length as a steps x ``width`` array padded with NaN."""
    matrix = np.full((len(rows), width), math.nan)
    for index, row in enumerate(rows):
        values = _floats(row)[:width]
        matrix[index, :len(values)] = values
    return matrix


def gradient_flow_chart(probe, problems: dict | None = None) -> Chart | None:
    """RMS gradient of each layer, input to output, for a few steps and their median.

    Args:
        probe: The :class:`~gradadvisor.probe.ProbeResult`.
        problems: ``{layer name: [rule ids]}`` for the layers where a finding
            starts; each gets a dashed red line.

    Returns:
        The chart, or None when no layer recorded a gradient.
    """
    import matplotlib

    layers = [info for info in probe.weighted_layers()
              if len(probe.stats.get(info.name, {}).get("grad_rms", [])) > 0]
    if not layers:
        return None
    names = [info.name for info in layers]
    num_steps = max(len(probe.stats[name]["grad_rms"]) for name in names)
    matrix = _matrix([[probe.stats[name]["grad_rms"][step]
                       if step < len(probe.stats[name]["grad_rms"]) else math.nan
                       for name in names] for step in range(num_steps)], len(names))
    finite_rows = [row for row in range(num_steps) if np.isfinite(matrix[row]).all()]
    notes = []
    skipped = [row for row in range(num_steps) if row not in finite_rows]
    if skipped:
        first = skipped[0]
        bad = [n for n, v in zip(names, matrix[first]) if not np.isfinite(v)]
        notes.append(f"Step{'s' if len(skipped) > 1 else ''} {_ranges(skipped)} left out of the "
                     f"median: NaN or infinite gradients (first at step {first}, in "
                     f"{_names(bad)}).")
    zeros = [(n, row) for row in finite_rows for n, v in zip(names, matrix[row]) if v == 0]
    if zeros:
        layers_at_zero = sorted({n for n, _ in zeros}, key=names.index)
        notes.append(f"{len(zeros)} gradient value(s) of exactly 0 cannot be drawn on a log scale "
                     f"({_names(layers_at_zero)}).")
    x = np.arange(len(names))
    with matplotlib.rc_context(_STYLE):
        figure, axis = _figure()
        _step_lines(axis, x, matrix, finite_rows)
        _log_y(axis)
        if not np.isfinite(_loggable(matrix)).any():
            axis.set_ylim(1e-8, 1)
            notes.append("No layer has a finite, non-zero gradient to draw.")
        _log_limits(axis, min_decades=2, headroom=0.18)
        axis.set_xlim(-0.5, len(names) - 0.5)
        if probe.nonfinite is not None:
            from matplotlib.transforms import blended_transform_factory

            step = probe.nonfinite.get("step")
            bad = [names.index(n) for n in
                   probe.nonfinite.get("layers_with_nonfinite_gradients") or [] if n in names]
            if bad:
                axis.plot(bad, [0.89] * len(bad), linestyle="none", marker="X", markersize=9,
                          color=_PROBLEM_COLOR, label=f"NaN/inf gradient at step {step}",
                          transform=blended_transform_factory(axis.transData, axis.transAxes))
        for name, rules in (problems or {}).items():
            if name in names:
                _mark_problem(axis, names.index(name), ", ".join(rules))
        _layer_ticks(axis, names)
        axis.set_ylabel("RMS gradient (log scale)")
        axis.grid(axis="x", visible=False)
        axis.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=5, borderaxespad=0)
        svg = _render(figure)
    description = (f"Line chart of the RMS gradient of {len(names)} layers from input to output "
                   f"on a log scale, for {len(_spread(finite_rows))} probe steps and their median.")
    return Chart(svg, notes, description)


def gradient_through_time_chart(probe, layer: str) -> Chart | None:
    """Norm of d loss / d input at each timestep of one recurrent layer.

    Args:
        probe: The :class:`~gradadvisor.probe.ProbeResult`.
        layer: The recurrent layer's name (a key of ``timestep_grad_norms``).

    Returns:
        The chart, or None when the layer has no per-timestep gradients.
    """
    import matplotlib

    steps = probe.timestep_grad_norms.get(layer) or []
    length = max((len(row) for row in steps), default=0)
    if length == 0:
        return None
    matrix = _matrix(steps, length)
    finite_rows = [row for row in range(len(steps)) if np.isfinite(matrix[row]).all()]
    notes = []
    skipped = [row for row in range(len(steps)) if row not in finite_rows]
    if skipped:
        notes.append(f"Step{'s' if len(skipped) > 1 else ''} {_ranges(skipped)} left out: NaN or "
                     "infinite gradients.")
    keep = _thin(length)
    x = np.arange(length)[keep]
    with matplotlib.rc_context(_STYLE):
        figure, axis = _figure()
        median = _step_lines(axis, x, matrix[:, keep], finite_rows)
        zero = np.flatnonzero(median == 0)
        if zero.size:
            # Gradients below float32's range come out as exactly 0: show where.
            notes.append(f"The median gradient is exactly 0 (below float32 range) at "
                         f"{zero.size} of {len(x)} drawn timesteps; those are shaded grey.")
            runs = np.split(zero, np.flatnonzero(np.diff(zero) != 1) + 1)
            for run in runs:
                axis.axvspan(x[run[0]] - 0.5, x[run[-1]] + 0.5, color="#e5e7eb", linewidth=0,
                             zorder=0)
        _log_y(axis)
        if not np.isfinite(_loggable(matrix)).any():
            axis.set_ylim(1e-8, 1)
            notes.append("No timestep has a finite, non-zero gradient to draw.")
        _log_limits(axis, min_decades=2)
        axis.set_xlim(-0.5, length - 0.5)
        axis.set_xlabel("timestep (first → last)")
        axis.set_ylabel("‖d loss / d input‖ (log scale)")
        axis.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=4, borderaxespad=0)
        # Ids must differ between layers whose names differ only in punctuation.
        svg = _render(figure)
    description = (f"Line chart of the gradient norm at each of {length} timesteps of {layer}, "
                   "on a log scale, for a few probe steps and their median.")
    return Chart(svg, notes, description)


def _loss_axis(axis, losses: np.ndarray, label: str, headroom: float = 0.12):
    """A log y axis for losses that span decades, else a linear one; headroom for the legend."""
    if _log_scale_fits(losses):
        _log_y(axis)
        axis.set_ylabel(f"{label} (log scale)")
        _log_limits(axis, headroom=headroom)
    else:
        axis.set_ylabel(label)
        low, high = axis.get_ylim()
        axis.set_ylim(low, high + headroom * (high - low))


def _log_scale_fits(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 1 and (finite > 0).all() and finite.max() / finite.min() > 50


def _curve(axis, values: np.ndarray, color: str, label: str, width: float = 1.8):
    finite = np.isfinite(values)
    steps = np.arange(len(values))
    axis.plot(steps[finite], values[finite], color=color, linewidth=width, label=label,
              marker="o" if finite.sum() < 15 else None, markersize=3.5)


def loss_chart(probe) -> Chart | None:
    """The training loss at each probe step, with the first non-finite step marked.

    Returns:
        The chart, or None when no step ran.
    """
    import matplotlib

    losses = _floats(probe.loss)
    if losses.size == 0:
        return None
    notes = []
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        notes.append(f"The loss was NaN or infinite at step{'s' if bad.size > 1 else ''} "
                     f"{_ranges(bad.tolist())}; those steps are not drawn.")
    with matplotlib.rc_context(_STYLE):
        figure, axis = _figure(3.0)
        _curve(axis, losses, "#2563eb", "training loss")
        _loss_axis(axis, losses, "loss")
        if not np.isfinite(losses).any():
            notes.append("No step had a finite loss.")
        axis.set_xlim(-0.5, max(len(losses) - 0.5, 0.5))
        step = (probe.nonfinite or {}).get("step")
        if step is not None:
            where = probe.nonfinite.get("where", "values")
            _mark_problem(axis, step, f"NaN/inf {where} at step {step}")
        axis.set_xlabel("probe step")
        axis.xaxis.get_major_locator().set_params(integer=True)
        svg = _render(figure)
    description = f"Line chart of the training loss over {len(losses)} probe steps."
    return Chart(svg, notes, description)


def units_chart(rows: list) -> Chart | None:
    """Median fraction of dead and of saturated units per layer, as bars.

    Args:
        rows: :meth:`Diagnosis.layer_table` rows (``dead_fraction`` and
            ``saturated_fraction`` are None where they do not apply).

    Returns:
        The chart, or None when no layer has a dead or saturated unit.
    """
    import matplotlib

    measured = [row for row in rows
                if row.get("dead_fraction") is not None
                or row.get("saturated_fraction") is not None]
    dead = _floats([row.get("dead_fraction") for row in measured])
    saturated = _floats([row.get("saturated_fraction") for row in measured])
    if not measured or not (np.nan_to_num(dead) > 0).any() and not (
            np.nan_to_num(saturated) > 0).any():
        return None
    names = [row["name"] for row in measured]
    x = np.arange(len(names))
    series = [(values, label, color) for values, label, color in
              ((dead, "dead ReLU units", "#ea580c"), (saturated, "saturated units", "#7c3aed"))
              if np.isfinite(values).any()]
    width = 0.8 / len(series)
    with matplotlib.rc_context(_STYLE):
        figure, axis = _figure(3.0)
        for offset, (values, label, color) in enumerate(series):
            shift = (offset - (len(series) - 1) / 2) * width
            axis.bar(x + shift, np.nan_to_num(values) * 100, width=width, color=color, label=label)
        axis.set_ylim(0, 100)
        axis.set_ylabel("% of units (median over steps)")
        _layer_ticks(axis, names)
        axis.grid(axis="x", visible=False)
        axis.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=2, borderaxespad=0)
        svg = _render(figure)
    description = (f"Bar chart of the median share of dead and saturated units in {len(names)} "
                   "layers.")
    return Chart(svg, [], description)


def confirmation_chart(confirmation: dict) -> Chart | None:
    """Loss of the original and of the recommended setup over the same steps.

    Args:
        confirmation: The recommendation's ``confirmation`` dict, with
            ``original`` and ``recommended`` each holding a ``loss`` list.

    Returns:
        The chart, or None when neither run has a loss curve.
    """
    import matplotlib

    runs = [(name, _floats((confirmation.get(name) or {}).get("loss")), color)
            for name, color in (("original", _PROBLEM_COLOR), ("recommended", _GOOD_COLOR))]
    runs = [run for run in runs if run[1].size]
    if not runs:
        return None
    notes = []
    with matplotlib.rc_context(_STYLE):
        figure, axis = _figure(3.0)
        for name, losses, color in runs:
            _curve(axis, losses, color, f"{name} setup", width=2.0)
        _loss_axis(axis, np.concatenate([losses for _, losses, _ in runs]), "training loss")
        length = max(losses.size for _, losses, _ in runs)
        axis.set_xlim(-0.5, max(length - 0.5, 0.5))
        for name, losses, _ in runs:
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:
                notes.append(f"The {name} setup's loss was NaN or infinite at step"
                             f"{'s' if bad.size > 1 else ''} {_ranges(bad.tolist())}; "
                             "those steps are not drawn.")
                _mark_problem(axis, int(bad[0]), f"{name}: NaN/inf")
        axis.set_xlabel("training step (same data, same seed)")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncol=2, borderaxespad=0)
        svg = _render(figure)
    description = "Line chart comparing the training loss of the original and recommended setups."
    return Chart(svg, notes, description)
