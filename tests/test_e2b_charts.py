"""Rich results: the formatter snippet turns DataFrames and matplotlib figures into E2B's
`Result.data` and typed `Result.chart` (needs matplotlib in the kernel's Python; the
DataFrame tests also need pandas)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator

import pytest

from agentrun_ci import Config, e2b
from agentrun_ci.e2b import Sandbox, charts
from agentrun_ci.e2b._setup import FORMATTERS

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def sbx(emulator: Config) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(config=emulator)
    yield sandbox
    sandbox.kill()
    e2b.close_shared()


def chart_of(sbx: Sandbox, code: str) -> charts.Chart:
    execution = sbx.run_code("import matplotlib.pyplot as plt\nimport numpy as np\n" + code)
    assert execution.error is None, execution.error
    chart = execution.results[0].chart
    assert chart is not None
    return chart


def test_dataframe_becomes_data(sbx: Sandbox) -> None:
    pytest.importorskip("pandas")
    result = sbx.run_code(
        "import pandas as pd\n"
        "pd.DataFrame({'a': [1, 2, 3], 'when': pd.to_datetime(['2024-01-01'] * 3)})"
    ).results[0]
    assert result.data == {
        "a": [1, 2, 3],
        "when": ["2024-01-01T00:00:00.000"] * 3,
    }
    assert result.html is not None
    assert result.formats() == ["text", "html", "data"]
    assert result.extra is None


def test_line_chart_with_dates_and_units(sbx: Sandbox) -> None:
    chart = chart_of(
        sbx,
        "import datetime\n"
        "days = [datetime.date(2024, 1, 1) + datetime.timedelta(days=i) for i in range(5)]\n"
        "plt.figure()\n"
        "plt.plot(days, [1, 4, 9, 16, 25], label='squares')\n"
        "plt.plot(days, [1, 2, 3, 4, 5])\n"
        "plt.xlabel('Day'); plt.ylabel('Area [m2]'); plt.title('Growth')\n"
        "plt.show()",
    )
    assert isinstance(chart, charts.LineChart)
    assert chart.type == charts.ChartType.LINE
    assert (chart.title, chart.x_label, chart.y_label) == ("Growth", "Day", "Area [m2]")
    assert (chart.x_unit, chart.y_unit) == (None, "m2")
    assert (chart.x_scale, chart.y_scale) == ("datetime", "linear")
    assert all(isinstance(t, str) for t in chart.x_ticks)
    datetime.datetime.fromisoformat(str(chart.x_ticks[0]))
    assert all(isinstance(t, float) for t in chart.y_ticks)
    first, second = chart.elements
    assert first.label == "squares"
    assert first.points[0] == ("2024-01-01", 1.0)
    assert second.label == "Line 1"


def test_scatter_and_log_and_categorical_scales(sbx: Sandbox) -> None:
    scatter = chart_of(
        sbx,
        "plt.figure(); plt.scatter([1, 2], [3, 4], label='a'); "
        "plt.scatter([5], [6], label='b'); plt.yscale('log'); plt.show()",
    )
    assert isinstance(scatter, charts.ScatterChart)
    assert scatter.title is None
    assert [(d.label, d.points) for d in scatter.elements] == [
        ("a", [(1.0, 3.0), (2.0, 4.0)]),
        ("b", [(5.0, 6.0)]),
    ]
    assert (scatter.x_scale, scatter.y_scale) == ("linear", "log")
    categorical = chart_of(sbx, "plt.figure(); plt.plot([1, 2, 3], ['x', 'y', 'z']); plt.show()")
    assert isinstance(categorical, charts.LineChart)
    assert categorical.y_scale == "categorical"


def test_bar_chart(sbx: Sandbox) -> None:
    chart = chart_of(
        sbx,
        "plt.figure(); plt.bar(['A', 'B', 'C'], [3, 1, 2], label='sold'); "
        "plt.xlabel('Book'); plt.ylabel('Copies'); plt.show()",
    )
    assert isinstance(chart, charts.BarChart)
    assert [(b.label, b.group, b.value) for b in chart.elements] == [
        ("A", "sold", 3.0),
        ("B", "sold", 1.0),
        ("C", "sold", 2.0),
    ]
    assert (chart.x_label, chart.y_label) == ("Book", "Copies")
    horizontal = chart_of(
        sbx, "plt.figure(); plt.barh(['A', 'B'], [5, 7]); plt.xlabel('Copies'); plt.show()"
    )
    assert isinstance(horizontal, charts.BarChart)
    assert [(b.label, b.value) for b in horizontal.elements] == [("A", 5.0), ("B", 7.0)]
    assert horizontal.y_label == "Copies"  # the value axis is y, as for vertical bars


def test_pie_chart(sbx: Sandbox) -> None:
    chart = chart_of(
        sbx, "plt.figure(); plt.pie([75, 25], labels=['yes', 'no']); plt.title('Q'); plt.show()"
    )
    assert isinstance(chart, charts.PieChart)
    assert chart.title == "Q"
    assert [(w.label, w.angle, w.radius) for w in chart.elements] == [
        ("yes", 270.0, 1.0),
        ("no", 90.0, 1.0),
    ]


def test_box_and_whisker_chart(sbx: Sandbox) -> None:
    chart = chart_of(
        sbx,
        "fig, ax = plt.subplots()\n"
        "ax.boxplot([[1, 2, 3, 4, 5], [10, 11, 12, 13, 40]], tick_labels=['p', 'q'],"
        " patch_artist=True)\n"
        "ax.set_ylabel('Score'); plt.show()",
    )
    assert isinstance(chart, charts.BoxAndWhiskerChart)
    p, q = chart.elements
    assert (p.label, p.min, p.first_quartile, p.median, p.third_quartile, p.max) == (
        "p",
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
    )
    assert p.outliers == []
    assert (q.label, q.median, q.max, q.outliers) == ("q", 12.0, 13.0, [40.0])
    assert chart.y_label == "Score"


def test_super_chart_and_unknown(sbx: Sandbox) -> None:
    chart = chart_of(
        sbx,
        "fig, (a, b) = plt.subplots(1, 2); fig.suptitle('Both')\n"
        "a.plot([1, 2], [3, 4]); a.set_title('line'); b.scatter([1], [2]); plt.show()",
    )
    assert isinstance(chart, charts.SuperChart)
    assert chart.type == charts.ChartType.SUPERCHART
    assert chart.title == "Both"
    line, scatter = chart.elements
    assert isinstance(line, charts.LineChart)
    assert line.title == "line"
    assert isinstance(scatter, charts.ScatterChart)
    unknown = chart_of(
        sbx,
        "fig, ax = plt.subplots(); ax.add_artist(plt.Circle((0, 0), 1)); "
        "plt.title('circle'); plt.show()",
    )
    assert unknown.type == charts.ChartType.UNKNOWN
    assert (unknown.title, unknown.elements) == ("circle", [])
    empty = sbx.run_code("plt.figure(); plt.show()")
    assert all(r.chart is None for r in empty.results)


def test_figure_results_keep_png_and_serialize(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.figure(); plt.plot([1, 2]); plt.show()\n'done'"
    )
    figure, main = execution.results
    assert figure.png
    assert figure.text
    assert not figure.extra
    assert figure.formats() == ["text", "png", "chart"]
    assert main.text == "done"
    as_json = json.loads(execution.to_json())
    assert as_json["results"][0]["chart"]["type"] == "line"
    assert isinstance(figure.chart, charts.LineChart)
    assert figure.chart.to_dict()["type"] == "line"


def test_pil_images_show_as_results(sbx: Sandbox) -> None:
    pytest.importorskip("PIL")
    shown = sbx.run_code(
        "from PIL import Image\nimg = Image.new('RGB', (4, 4))\nimg.show()\nprint('shown')"
    )
    assert shown.results[0].png
    saved = sbx.run_code("img.save('tiny.png')")
    assert saved.results[0].png
    assert sbx.files.exists("/home/user/tiny.png")


def test_rich_results_can_be_turned_off(emulator: Config) -> None:
    pytest.importorskip("pandas")
    with Sandbox.create(config=emulator, rich_results=False) as plain:
        result = plain.run_code("import pandas as pd\npd.DataFrame({'a': [1]})").results[0]
        assert result.data is None
        assert result.html is not None
        assert result.formats() == ["text", "html"]
        assert plain.run_code("1").execution_count == 2


def test_the_snippet_leaves_no_names_and_may_run_again(sbx: Sandbox) -> None:
    # its cost is measured by benchmarks/e2b_formatters.py, not asserted here
    context = sbx.create_code_context()
    names = sbx.run_code("sorted(n for n in globals() if 'agentrun' in n)", context=context)
    assert names.text == "[]"
    assert names.execution_count == 1  # the snippet's own run is not counted
    again = sbx.run_code(FORMATTERS, context=context)
    assert again.error is None
    drawn = sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.show()", context=context
    )
    assert isinstance(drawn.results[0].chart, charts.LineChart)  # one chart, not two
