"""Typed charts extracted from matplotlib figures, in E2B's shape.

A Python context created by `agentrun_ci.e2b` registers a display formatter
(see `agentrun_ci.e2b._setup`) that describes every matplotlib figure it
displays as JSON; `Result.chart` is that JSON as one of these classes:

* `LineChart`, `ScatterChart` -- `elements` are `PointData(label, points)`;
* `BarChart` -- `elements` are `BarData(label, group, value)`;
* `PieChart` -- `elements` are `PieData(label, angle, radius)` (angle in degrees);
* `BoxAndWhiskerChart` -- `elements` are `BoxAndWhiskerData(label, min,
  first_quartile, median, third_quartile, max, outliers)`;
* `SuperChart` -- a figure with several axes: `elements` are the charts above;
* `Chart` with `type == ChartType.UNKNOWN` -- anything else (title only).

`chart.to_dict()` gives back the JSON it was made from.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BarChart",
    "BarData",
    "BoxAndWhiskerChart",
    "BoxAndWhiskerData",
    "Chart",
    "Chart2D",
    "ChartType",
    "LineChart",
    "PieChart",
    "PieData",
    "PointChart",
    "PointData",
    "ScaleType",
    "ScatterChart",
    "SuperChart",
    "chart_from_dict",
]


class ChartType(str, enum.Enum):
    """What kind of chart a figure (or one of its axes) is."""

    LINE = "line"
    SCATTER = "scatter"
    BAR = "bar"
    PIE = "pie"
    BOX_AND_WHISKER = "box_and_whisker"
    SUPERCHART = "superchart"
    UNKNOWN = "unknown"


class ScaleType(str, enum.Enum):
    """An axis scale: matplotlib's scale names plus `datetime` and `categorical`."""

    LINEAR = "linear"
    DATETIME = "datetime"
    CATEGORICAL = "categorical"
    LOG = "log"
    SYMLOG = "symlog"
    LOGIT = "logit"
    FUNCTION = "function"
    FUNCTIONLOG = "functionlog"
    ASINH = "asinh"
    UNKNOWN = "unknown"


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


class Chart:
    """A chart: its type, title and elements (`to_dict()` returns the source JSON)."""

    type: ChartType
    title: str | None
    elements: list[Any]

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = dict(raw)
        try:
            self.type = ChartType(raw.get("type") or ChartType.UNKNOWN)
        except ValueError:
            self.type = ChartType.UNKNOWN
        self.title = _opt_str(raw.get("title"))
        self.elements = self._elements(raw.get("elements") or [])

    def _elements(self, raw: list[Any]) -> list[Any]:
        return list(raw)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._raw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(title={self.title!r}, elements={len(self.elements)})"


class Chart2D(Chart):
    """A chart with two axes: labels and units (a unit is the `(…)` or `[…]` in a label)."""

    x_label: str | None
    y_label: str | None
    x_unit: str | None
    y_unit: str | None

    def __init__(self, raw: Mapping[str, Any]) -> None:
        super().__init__(raw)
        self.x_label = _opt_str(raw.get("x_label"))
        self.y_label = _opt_str(raw.get("y_label"))
        self.x_unit = _opt_str(raw.get("x_unit"))
        self.y_unit = _opt_str(raw.get("y_unit"))


class PointData:
    """One labelled series of (x, y) points; dates are ISO-8601 strings."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.label: str = str(raw.get("label", ""))
        self.points: list[tuple[str | float, str | float]] = [
            (x, y) for x, y in raw.get("points") or []
        ]

    def __repr__(self) -> str:
        return f"PointData(label={self.label!r}, points={len(self.points)})"


class PointChart(Chart2D):
    """A line or scatter chart: ticks, tick labels and scale per axis."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        super().__init__(raw)
        self.x_ticks: list[str | float] = list(raw.get("x_ticks") or [])
        self.x_tick_labels: list[str] = [str(t) for t in raw.get("x_tick_labels") or []]
        self.x_scale: str = str(raw.get("x_scale") or "linear")
        self.y_ticks: list[str | float] = list(raw.get("y_ticks") or [])
        self.y_tick_labels: list[str] = [str(t) for t in raw.get("y_tick_labels") or []]
        self.y_scale: str = str(raw.get("y_scale") or "linear")

    def _elements(self, raw: list[Any]) -> list[Any]:
        return [PointData(item) for item in raw]


class LineChart(PointChart):
    """Lines (`plt.plot`)."""


class ScatterChart(PointChart):
    """Points (`plt.scatter`)."""


class BarData:
    """One bar: its category label, its series (group) and its value."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.label: str = str(raw.get("label", ""))
        self.group: str = str(raw.get("group", ""))
        self.value: float = raw.get("value", 0.0)

    def __repr__(self) -> str:
        return f"BarData(label={self.label!r}, group={self.group!r}, value={self.value!r})"


class BarChart(Chart2D):
    """Bars (`plt.bar`, `plt.barh`)."""

    def _elements(self, raw: list[Any]) -> list[Any]:
        return [BarData(item) for item in raw]


class PieData:
    """One wedge: its label, its angle in degrees and its radius."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.label: str = str(raw.get("label", ""))
        self.angle: float = raw.get("angle", 0.0)
        self.radius: float = raw.get("radius", 0.0)

    def __repr__(self) -> str:
        return f"PieData(label={self.label!r}, angle={self.angle!r})"


class PieChart(Chart):
    """Wedges (`plt.pie`)."""

    def _elements(self, raw: list[Any]) -> list[Any]:
        return [PieData(item) for item in raw]


class BoxAndWhiskerData:
    """One box: quartiles, whisker ends and outliers."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.label: str = str(raw.get("label", ""))
        self.min: float = raw.get("min", 0.0)
        self.first_quartile: float = raw.get("first_quartile", 0.0)
        self.median: float = raw.get("median", 0.0)
        self.third_quartile: float = raw.get("third_quartile", 0.0)
        self.max: float = raw.get("max", 0.0)
        self.outliers: list[float] = list(raw.get("outliers") or [])

    def __repr__(self) -> str:
        return f"BoxAndWhiskerData(label={self.label!r}, median={self.median!r})"


class BoxAndWhiskerChart(Chart2D):
    """Boxes (`plt.boxplot(..., patch_artist=True)`)."""

    def _elements(self, raw: list[Any]) -> list[Any]:
        return [BoxAndWhiskerData(item) for item in raw]


class SuperChart(Chart):
    """A figure with several axes: `elements` holds one chart per axes."""

    def _elements(self, raw: list[Any]) -> list[Any]:
        return [chart_from_dict(item) for item in raw if isinstance(item, Mapping)]


_CLASSES: dict[ChartType, type[Chart]] = {
    ChartType.LINE: LineChart,
    ChartType.SCATTER: ScatterChart,
    ChartType.BAR: BarChart,
    ChartType.PIE: PieChart,
    ChartType.BOX_AND_WHISKER: BoxAndWhiskerChart,
    ChartType.SUPERCHART: SuperChart,
}


def chart_from_dict(raw: Mapping[str, Any]) -> Chart:
    """The typed chart for the formatter's JSON (`Chart` when the type is unknown)."""
    try:
        kind = ChartType(raw.get("type") or ChartType.UNKNOWN)
    except ValueError:
        kind = ChartType.UNKNOWN
    return _CLASSES.get(kind, Chart)(raw)
