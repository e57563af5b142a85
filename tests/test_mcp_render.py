"""Pure unit tests of agentrun_ci_mcp.render: Execution → MCP content."""

from __future__ import annotations

import base64
import io
import json

import pytest

pytest.importorskip("mcp")
PIL_Image = pytest.importorskip("PIL.Image")

from agentrun_ci import Execution, ExecutionError, Logs, Result  # noqa: E402
from agentrun_ci_mcp.render import (  # noqa: E402
    RenderOptions,
    RunCodeOutput,
    render_execution,
    truncate,
)


def _png(width: int, height: int, *, noisy: bool = True) -> bytes:
    """A PNG that compresses badly when noisy (so it really needs downscaling)."""
    image = PIL_Image.new("RGB", (width, height), (255, 255, 255))
    if noisy:
        image = PIL_Image.effect_noise((width, height), 80).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _image_result(raw: bytes, mime: str = "image/png") -> Result:
    return Result(
        text="<Figure size 640x480 with 1 Axes>",
        data={
            "text/plain": "<Figure size 640x480 with 1 Axes>",
            mime: base64.b64encode(raw).decode(),
        },
    )


def test_plain_output_keeps_the_legacy_text_shape() -> None:
    execution = Execution(
        results=[Result(text="42", data={"text/plain": "42"}, is_main_result=True)],
        logs=Logs(stdout=["a\n", "b\n"], stderr=["warn\n"]),
        execution_count=3,
        duration=0.0125,
    )
    rendered = render_execution(execution)
    assert not rendered.is_error
    s = rendered.structured
    RunCodeOutput.model_validate(s)
    assert s["stdout"] == "a\nb\n"
    assert s["stderr"] == "warn\n"
    assert s["results"] == [
        {"mime_types": ["text/plain"], "text": "42", "is_main_result": True, "summary": None}
    ]
    assert s["execution_count"] == 3
    assert s["duration_ms"] == 12.5
    assert s["truncated"] is False
    assert s["state_reset"] is False
    assert s["error"] is None
    legacy = json.loads(rendered.content[0].text)  # type: ignore[union-attr]
    # old E2B clients read lists of chunks under these keys
    assert legacy["stdout"] == ["a\n", "b\n"]
    assert legacy["stderr"] == ["warn\n"]
    assert legacy["results"][0]["text"] == "42"
    assert len(rendered.content) == 1


def test_error_is_data_with_ansi_stripped() -> None:
    tb = "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"
    execution = Execution(
        error=ExecutionError(name="ZeroDivisionError", value="division by zero", traceback=tb),
        status="error",
    )
    rendered = render_execution(execution)
    assert rendered.is_error
    err = rendered.structured["error"]
    assert err == {
        "name": "ZeroDivisionError",
        "value": "division by zero",
        "traceback": "ZeroDivisionError: division by zero",
    }
    assert "\x1b" not in rendered.content[0].text  # type: ignore[union-attr]


def test_timeout_status_without_error_event_is_an_error() -> None:
    rendered = render_execution(Execution(status="timeout"))
    assert rendered.is_error
    assert rendered.structured["error"]["name"] == "TimeoutError"


def test_truncate_keeps_head_and_tail_with_marker() -> None:
    text = "H" * 600 + "M" * 5000 + "T" * 400
    cut, dropped = truncate(text, 1000, what="stdout")
    assert dropped == len(text) - 1000
    assert cut.startswith("H" * 500)
    assert cut.endswith("M" * 100 + "T" * 400)
    assert f"{dropped} characters of stdout truncated" in cut
    assert truncate("short", 1000) == ("short", 0)


def test_huge_stdout_is_truncated_in_both_forms() -> None:
    execution = Execution(logs=Logs(stdout=["x" * 100 for _ in range(1000)]))
    rendered = render_execution(execution, RenderOptions(max_output_chars=2000))
    s = rendered.structured
    assert s["truncated"] is True
    assert len(s["stdout"]) < 2300
    assert "characters of stdout truncated" in s["stdout"]
    assert any("stdout" in note for note in s["notes"])
    legacy = json.loads(rendered.content[0].text)  # type: ignore[union-attr]
    assert "".join(legacy["stdout"]) == s["stdout"]


def test_small_png_passes_through_unchanged() -> None:
    raw = _png(64, 48, noisy=False)
    rendered = render_execution(Execution(results=[_image_result(raw)]))
    assert len(rendered.content) == 2
    image = rendered.content[1]
    assert image.type == "image"
    assert image.mime_type == "image/png"
    assert base64.b64decode(image.data) == raw  # type: ignore[union-attr]
    assert "image block #1" in rendered.structured["results"][0]["summary"]
    assert rendered.structured["results"][0]["mime_types"] == ["image/png"]


def test_large_png_is_downscaled_within_budget() -> None:
    raw = _png(1200, 900)
    budget = 60_000
    assert len(raw) > budget
    rendered = render_execution(
        Execution(results=[_image_result(raw)]), RenderOptions(image_budget_bytes=budget)
    )
    assert len(rendered.content) == 2
    data = base64.b64decode(rendered.content[1].data)  # type: ignore[union-attr]
    assert len(data) <= budget
    with PIL_Image.open(io.BytesIO(data)) as img:
        assert img.size[0] < 1200
    assert "was 1200x900" in rendered.structured["results"][0]["summary"]


def test_budget_is_shared_and_an_image_that_cannot_fit_is_dropped_with_a_note() -> None:
    raw = _png(400, 300)
    rendered = render_execution(
        Execution(results=[_image_result(raw)]), RenderOptions(image_budget_bytes=200)
    )
    assert len(rendered.content) == 1
    assert "omitted" in rendered.structured["results"][0]["summary"]
    assert not rendered.is_error


def test_svg_and_html_are_summarised_in_text() -> None:
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="300pt" height="200pt"><g/></svg>'
    html = "<table><tr><td>hello</td></tr></table>"
    execution = Execution(
        results=[
            Result(text=None, data={"image/svg+xml": svg}),
            Result(text="   a\n0  1", data={"text/plain": "   a\n0  1", "text/html": html}),
            Result(text=None, data={"text/html": html}),
        ]
    )
    rendered = render_execution(execution)
    assert len(rendered.content) == 1
    results = rendered.structured["results"]
    assert "SVG image 300ptx200pt" in results[0]["summary"]
    assert "text/plain form" in results[1]["summary"]
    assert "hello" in results[2]["summary"]


def test_state_reset_and_notes_and_extra() -> None:
    execution = Execution(state_reset=True)
    rendered = render_execution(execution, notes=["first"], extra={"session": "h"})
    s = rendered.structured
    assert s["state_reset"] is True
    assert s["notes"][0] == "first"
    assert any("state reset" in n for n in s["notes"])
    assert s["session"] == "h"
    assert json.loads(rendered.content[0].text)["session"] == "h"  # type: ignore[union-attr]


def test_a_run_whose_kernel_died_is_not_said_to_follow_a_reset() -> None:
    """The dead run's own error says the state is gone; "recreated before this run" is the
    next run's note, not this one's."""
    died = ExecutionError(name="DeadKernelError", value="the code's process died", traceback="")
    s = render_execution(Execution(error=died, status="error", state_reset=True)).structured
    assert s["state_reset"] is True
    assert s["error"]["name"] == "DeadKernelError"
    assert not any("before this run" in n for n in s["notes"])
