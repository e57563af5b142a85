"""E2B's result models, as thin views over agentrun-ci's own.

agentrun-ci parses the service's answer once (`agentrun_ci.Execution`); these
classes only rename and reshape it the way E2B's `Execution` and `Result` read:

* `Result.text` loses the quotes IPython puts around a string (`'a'` -> `a`);
* `Result.png`, `.html`, ... are the MIME bundle's entries; `formats()` lists
  the short names present (`["text", "png", "chart"]`);
* `Result.data` (pandas DataFrames) and `Result.chart` (matplotlib figures)
  come from the formatters the shim installs in every Python context;
* `Result.extra` holds the MIME types E2B has no field for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import attrs

from .._models import Execution as _Execution
from .._models import ExecutionError, Logs
from .._models import Result as _Result
from . import charts as _charts
from ._setup import CHART_MIME, DATA_MIME, OWN_MIMES

__all__ = ["Execution", "ExecutionError", "Logs", "OutputMessage", "Result"]

# E2B's field name -> MIME type, in the order E2B's formats() lists them
_FIELDS: dict[str, str] = {
    "html": "text/html",
    "markdown": "text/markdown",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "pdf": "application/pdf",
    "latex": "text/latex",
    "json": "application/json",
    "javascript": "application/javascript",
}
_KNOWN = frozenset({"text/plain", *_FIELDS.values(), *OWN_MIMES})


@attrs.frozen
class OutputMessage:
    """One chunk of stdout or stderr, as E2B hands it to `on_stdout` / `on_stderr`."""

    line: str
    #: when the shim received it, in nanoseconds since the epoch
    timestamp: int = attrs.field(factory=time.time_ns)
    #: True for stderr
    error: bool = False

    def __str__(self) -> str:
        return self.line


def _unquote(text: str | None) -> str | None:
    if text is not None and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


class Result:
    """One rich output (a display() call or the last expression), with E2B's fields."""

    def __init__(self, result: _Result) -> None:
        self.raw = result
        bundle = result.data
        self.text: str | None = _unquote(bundle.get("text/plain", result.text))
        self.html: str | None = bundle.get(_FIELDS["html"])
        self.markdown: str | None = bundle.get(_FIELDS["markdown"])
        self.svg: str | None = bundle.get(_FIELDS["svg"])
        self.png: str | None = bundle.get(_FIELDS["png"])
        self.jpeg: str | None = bundle.get(_FIELDS["jpeg"])
        self.pdf: str | None = bundle.get(_FIELDS["pdf"])
        self.latex: str | None = bundle.get(_FIELDS["latex"])
        self.json: Any = bundle.get(_FIELDS["json"])
        self.javascript: str | None = bundle.get(_FIELDS["javascript"])
        data = bundle.get(DATA_MIME)
        self.data: dict[str, Any] | None = data if isinstance(data, dict) else None
        chart = bundle.get(CHART_MIME)
        self.chart: _charts.Chart | None = (
            _charts.chart_from_dict(chart) if isinstance(chart, Mapping) and chart else None
        )
        self.is_main_result: bool = result.is_main_result
        extra = {k: v for k, v in bundle.items() if k not in _KNOWN}
        self.extra: dict[str, Any] | None = extra or None

    def __getitem__(self, item: str) -> Any:
        return getattr(self, item)

    def formats(self) -> list[str]:
        """The formats present, by E2B's short names (`text`, `png`, `chart`, extra MIME types)."""
        names = [name for name in ("text", *_FIELDS, "data", "chart") if getattr(self, name)]
        return names + list(self.extra or ())

    def to_dict(self) -> dict[str, Any]:
        """The formats present, as JSON-ready values (charts as their dicts)."""
        out: dict[str, Any] = {}
        for name in self.formats():
            if name == "chart":
                assert self.chart is not None
                out[name] = self.chart.to_dict()
            elif self.extra and name in self.extra:
                out[name] = self.extra[name]
            else:
                out[name] = getattr(self, name)
        out["text"] = self.text
        return out

    def __str__(self) -> str:
        return self.text or ""

    def __repr__(self) -> str:
        return f"Result({self.text!r})" if self.text else f"Result(formats={self.formats()})"

    def _repr_html_(self) -> str | None:
        return self.html

    def _repr_markdown_(self) -> str | None:
        return self.markdown

    def _repr_svg_(self) -> str | None:
        return self.svg

    def _repr_png_(self) -> str | None:
        return self.png

    def _repr_jpeg_(self) -> str | None:
        return self.jpeg

    def _repr_pdf_(self) -> str | None:
        return self.pdf

    def _repr_latex_(self) -> str | None:
        return self.latex

    def _repr_json_(self) -> Any:
        return self.json

    def _repr_javascript_(self) -> str | None:
        return self.javascript


class Execution:
    """What one `run_code` returned, in E2B's shape; other attributes come from ours.

    `results`, `logs`, `error`, `execution_count`, `text` and `to_json()` are
    E2B's; `stdout`, `stderr`, `status`, `duration`, `state_reset`, ... are
    agentrun-ci's (`raw` is the agentrun-ci `Execution` itself).
    """

    def __init__(self, execution: _Execution) -> None:
        self.raw = execution
        self.results: list[Result] = [Result(r) for r in execution.results]
        self.logs: Logs = execution.logs
        self.error: ExecutionError | None = execution.error
        self.execution_count: int | None = execution.execution_count

    def __getattr__(self, name: str) -> Any:
        if name == "raw":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.raw, name)

    @property
    def text(self) -> str | None:
        """The main result's text (the value of the last expression)."""
        for result in self.results:
            if result.is_main_result:
                return result.text
        return None

    def to_json(self) -> str:
        """The execution as JSON: results (by format), logs and error."""
        error = self.error
        return json.dumps(
            {
                "results": [r.to_dict() for r in self.results],
                "logs": {"stdout": self.logs.stdout, "stderr": self.logs.stderr},
                "error": None
                if error is None
                else {"name": error.name, "value": error.value, "traceback": error.traceback},
            }
        )

    def __repr__(self) -> str:
        return f"Execution(results={self.results!r}, logs={self.logs!r}, error={self.error!r})"
