"""Execution → MCP content: structured output, a JSON text block, images within a budget.

Three readers get the same execution:

* new clients read `structuredContent` (validated against `RunCodeOutput`);
* old clients of the E2B server parse the first text block as JSON and read
  `stdout` / `stderr` as *lists of chunks*; those keys keep that shape, the new
  fields sit beside them;
* the model sees images as `ImageContent` (PNG/JPEG re-encoded or downscaled to
  fit a byte budget) rather than as 100 kB of base64 text.

Everything a model reads is bounded: each stream keeps its head and tail with
an explicit marker saying how much was dropped, because a single runaway
`print` loop must not flood the client's context window.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from typing import TYPE_CHECKING, Any

import attrs
from mcp.types import ImageContent, TextContent
from pydantic import BaseModel, Field

from agentrun_ci import strip_ansi

if TYPE_CHECKING:
    from agentrun_ci import Execution, Result

__all__ = [
    "ErrorOut",
    "RenderOptions",
    "Rendered",
    "ResultOut",
    "RunCodeOutput",
    "compact_schema",
    "render_execution",
    "strip_ansi",
    "truncate",
]

DEFAULT_MAX_OUTPUT_CHARS = 20_000
DEFAULT_IMAGE_BUDGET_BYTES = 400_000
#: below this longest side a downscaled plot stops being readable: drop it instead
MIN_IMAGE_SIDE = 96

_IMAGE_MIMES = ("image/png", "image/jpeg")
_SVG_SIZE = re.compile(r'\b(width|height)="([^"]+)"')
_TAGS = re.compile(r"<[^>]+>")


# ---------------------------------------------------------------- output schema


class ResultOut(BaseModel):
    """One rich result (last expression value or display()), described in text."""

    mime_types: list[str] = Field(description="MIME types of the result's bundle")
    text: str | None = Field(default=None, description="text/plain form, if any")
    is_main_result: bool = Field(default=False, description="value of the last expression")
    summary: str | None = Field(
        default=None, description="what happened to non-text forms (image block, omitted SVG...)"
    )


class ErrorOut(BaseModel):
    """An exception raised by the user's code."""

    name: str
    value: str
    traceback: str


class UsageOut(BaseModel):
    """What the run used where it ran (fields null where the backend does not say)."""

    wall_time_s: float | None = Field(default=None, description="seconds the run took")
    cpu_time_s: float | None = Field(default=None, description="CPU seconds (user + system)")
    peak_memory_mb: float | None = Field(default=None, description="peak resident memory, MiB")


class RunCodeOutput(BaseModel):
    """What run_code returns as structuredContent."""

    stdout: str = Field(description="standard output (head and tail kept if truncated)")
    stderr: str = Field(description="standard error (head and tail kept if truncated)")
    results: list[ResultOut] = Field(default_factory=list)
    error: ErrorOut | None = Field(default=None, description="the exception, if the code raised")
    execution_count: int | None = None
    duration_ms: float | None = None
    truncated: bool = Field(default=False, description="some output was cut (see the markers)")
    state_reset: bool = Field(
        default=False,
        description="the context was recreated before this run: earlier variables are gone",
    )
    notes: list[str] = Field(default_factory=list, description="things the caller should know")
    usage: UsageOut | None = Field(
        default=None, description="resources the run used, to size --cpu/--memory"
    )


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The same JSON Schema, cheaper for a client to check on every call.

    Clients validate `structuredContent` against the output schema on each
    result; with pydantic's form (`$ref` into `$defs`, `anyOf [X, null]` for
    optional fields) that was a quarter of a call's CPU in the official client.
    Here references are inlined and `anyOf [{type: T}, {type: null}]` becomes
    `oneOf` of the same branches (never a `type` array, which strict validators
    warn about); titles (derived from the field names) are dropped.
    Accepts no recursive models (there are none in our outputs).
    """
    defs: dict[str, Any] = schema.get("$defs", {})

    def walk(node: Any, depth: int = 0) -> Any:
        if depth > 32:
            raise ValueError("compact_schema: recursive schema")
        if isinstance(node, list):
            return [walk(item, depth + 1) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out.update(walk(defs[ref.removeprefix("#/$defs/")], depth + 1))
        for key, value in node.items():
            if key in ("$ref", "$defs", "title"):
                continue
            if key == "properties":  # a map of names, not a schema: keep every name
                out[key] = {name: walk(sub, depth + 1) for name, sub in value.items()}
            else:
                out[key] = walk(value, depth + 1)
        branches = out.get("anyOf")
        if isinstance(branches, list) and len(branches) == 2 and {"type": "null"} in branches:
            other = branches[0] if branches[1] == {"type": "null"} else branches[1]
            exclusive = isinstance(other, dict) and other.get("type") not in (None, "null")
        else:
            exclusive = False
        if exclusive:
            # X or null: exclusive branches, so `oneOf` means the same as pydantic's
            # `anyOf`. Not `type: [X, "null"]`: strict validators (Ajv's strictTypes, as
            # in the MCP Inspector's --strict) warn on type arrays.
            out["oneOf"] = out.pop("anyOf")
        return out

    return dict(walk(schema))


# ---------------------------------------------------------------- options and result


@attrs.frozen
class RenderOptions:
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    image_budget_bytes: int = DEFAULT_IMAGE_BUDGET_BYTES


@attrs.frozen
class Rendered:
    structured: dict[str, Any]
    content: list[TextContent | ImageContent]
    is_error: bool


# ---------------------------------------------------------------- truncation


def truncate(text: str, limit: int, *, what: str = "output") -> tuple[str, int]:
    """Keep the head and tail of `text` within about `limit` chars; return (text, dropped).

    The marker sits on its own line and names the stream and the count, so a
    model knows output is missing and where.
    """
    if limit <= 0 or len(text) <= limit:
        return text, 0
    head = limit // 2
    tail = limit - head
    dropped = len(text) - head - tail
    marker = (
        f"\n[... {dropped} characters of {what} truncated (kept the first {head} and last "
        f"{tail}); write large output to a file and read parts of it ...]\n"
    )
    return text[:head] + marker + text[len(text) - tail :], dropped


# ---------------------------------------------------------------- images


def fit_image(raw: bytes, mime: str, budget: int) -> tuple[bytes, str, str] | None:
    """Return (bytes, mime, how) no larger than `budget`, or None when it cannot fit."""
    if len(raw) <= budget:
        return raw, mime, "as is"
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except Exception:  # Pillow raises many types for a corrupt image
        return None
    original = image.size
    has_alpha = image.mode in ("RGBA", "LA", "P") and (
        image.mode != "P" or "transparency" in image.info
    )

    def encode(scale: float) -> tuple[bytes, str, tuple[int, int]] | None:
        size = (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))
        if max(size) < MIN_IMAGE_SIDE:
            return None
        frame = image if scale == 1.0 else image.resize(size, Image.Resampling.LANCZOS)
        candidates: list[tuple[bytes, str]] = []
        buf = io.BytesIO()
        frame.save(buf, format="PNG", optimize=True)
        candidates.append((buf.getvalue(), "image/png"))
        rgb = frame.convert("RGBA") if has_alpha else frame.convert("RGB")
        if has_alpha:
            # JPEG has no alpha: flatten onto white, as a plot's background would be.
            background = Image.new("RGB", rgb.size, (255, 255, 255))
            background.paste(rgb, mask=rgb.split()[-1])
            rgb = background
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=85, optimize=True)
        candidates.append((buf.getvalue(), "image/jpeg"))
        data, out_mime = min(candidates, key=lambda c: len(c[0]))
        return data, out_mime, size

    # Shrink in proportion to the overshoot until it fits, then bisect between the
    # last miss and the first fit so the image keeps as many pixels as the budget allows.
    scale, miss = 1.0, 1.0
    best: tuple[bytes, str, tuple[int, int], float] | None = None
    for _ in range(12):
        encoded = encode(scale)
        if encoded is None:
            break
        data, out_mime, size = encoded
        if len(data) <= budget:
            best = (data, out_mime, size, scale)
            break
        miss = scale
        scale *= max(0.25, min(0.9, (budget / len(data)) ** 0.5 * 0.9))
    if best is None:
        return None
    low, high = best[3], miss
    for _ in range(4):
        if high - low < 0.02 or best[3] == 1.0:
            break
        mid = (low + high) / 2
        encoded = encode(mid)
        if encoded is not None and len(encoded[0]) <= budget:
            best = (*encoded, mid)
            low = mid
        else:
            high = mid
    data, out_mime, size, scale = best
    how = "re-encoded" if scale == 1.0 else f"downscaled to {size[0]}x{size[1]}"
    if out_mime != mime:
        how += f" as {out_mime.split('/')[1].upper()}"
    return data, out_mime, f"{how} (was {original[0]}x{original[1]}, {_kb(len(raw))})"


def _kb(size: int) -> str:
    return f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} B"


def _svg_summary(svg: str) -> str:
    dims = dict(_SVG_SIZE.findall(svg[:2000]))
    size = f" {dims['width']}x{dims['height']}" if "width" in dims and "height" in dims else ""
    return (
        f"SVG image{size} ({_kb(len(svg.encode()))}) not shown: MCP clients render PNG/JPEG; "
        "save the figure as PNG (e.g. plt.savefig / display PNG) to see it"
    )


def _html_summary(html: str, has_text: bool) -> str:
    words = " ".join(_TAGS.sub(" ", html).split())
    preview = words[:160] + ("..." if len(words) > 160 else "")
    tail = "; its text/plain form is in `text`" if has_text else f": {preview!r}"
    return f"HTML ({_kb(len(html.encode()))}) not rendered{tail}"


# ---------------------------------------------------------------- the renderer


def _describe(result: Result, opts: RenderOptions, state: dict[str, Any]) -> ResultOut:
    """Describe one result; images go to state["images"] within state["budget"]."""
    mimes = [m for m in result.data if m != "text/plain"] or (
        ["text/plain"] if result.text is not None else []
    )
    summaries: list[str] = []
    image_done = False
    for mime in _IMAGE_MIMES:
        payload = result.data.get(mime)
        if image_done or not isinstance(payload, str):
            continue
        image_done = True
        try:
            raw = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            summaries.append(f"{mime} could not be decoded; omitted")
            continue
        fitted = fit_image(raw, mime, state["budget"])
        if fitted is None:
            summaries.append(
                f"{mime} ({_kb(len(raw))}) omitted: it does not fit the image budget of "
                f"{_kb(state['budget'])} left for this call even downscaled; save it with "
                "savefig and fetch it with read_file, or plot smaller"
            )
            continue
        data, out_mime, how = fitted
        state["budget"] -= len(data)
        state["images"].append(
            ImageContent(
                type="image", data=base64.b64encode(data).decode("ascii"), mime_type=out_mime
            )
        )
        summaries.append(f"image block #{len(state['images'])}: {out_mime}, {how}")
    if not image_done:
        svg = result.data.get("image/svg+xml")
        if isinstance(svg, str):
            summaries.append(_svg_summary(svg))
    html = result.data.get("text/html")
    if isinstance(html, str) and not image_done:
        summaries.append(_html_summary(html, result.text is not None))
    text = result.text
    if text is not None:
        text, dropped = truncate(text, opts.max_output_chars, what="result text")
        state["truncated"] |= dropped > 0
    return ResultOut(
        mime_types=mimes,
        text=text,
        is_main_result=result.is_main_result,
        summary="; ".join(summaries) or None,
    )


def _usage(execution: Execution) -> UsageOut | None:
    usage = execution.usage
    if not usage.known:
        return None
    return UsageOut(
        wall_time_s=usage.wall_time,
        cpu_time_s=usage.cpu_time,
        peak_memory_mb=usage.peak_memory_mb,
    )


def render_execution(
    execution: Execution,
    opts: RenderOptions | None = None,
    *,
    notes: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    reset_note: str | None = None,
) -> Rendered:
    """Turn an Execution into (structuredContent, content blocks, isError).

    `extra` keys (e.g. the client's session handle) are added to both forms.
    `reset_note` says what a state reset lost (the caller knows whether files were
    kept); without it a reset gets a generic note.
    """
    opts = opts or RenderOptions()
    notes = list(notes or [])
    state: dict[str, Any] = {"budget": opts.image_budget_bytes, "images": [], "truncated": False}

    streams: dict[str, tuple[str, list[str]]] = {}
    for name, chunks in (("stdout", execution.logs.stdout), ("stderr", execution.logs.stderr)):
        joined = "".join(chunks)
        cut, dropped = truncate(joined, opts.max_output_chars, what=name)
        if dropped:
            state["truncated"] = True
            notes.append(f"{name}: {dropped} characters truncated from the middle")
            streams[name] = (cut, [cut])
        else:
            streams[name] = (joined, list(chunks))

    results = [_describe(r, opts, state) for r in execution.results]

    error: ErrorOut | None = None
    if execution.error is not None:
        tb, dropped = truncate(
            strip_ansi(execution.error.traceback), opts.max_output_chars, what="traceback"
        )
        state["truncated"] |= dropped > 0
        error = ErrorOut(
            name=execution.error.name, value=strip_ansi(execution.error.value), traceback=tb
        )
    elif execution.status not in ("ok", "error", ""):
        # e.g. "timeout" reported without an error event (the cloud's poorer variant)
        error = ErrorOut(
            name="TimeoutError" if execution.status == "timeout" else "ExecutionError",
            value=f"execution ended with status {execution.status!r}",
            traceback="",
        )
    # when this run's own kernel died, its error already says that the state is gone
    died = error is not None and error.name == "DeadKernelError"
    if execution.state_reset and not died:
        notes.append(
            reset_note
            or "state reset: the context had to be recreated before this run, so variables "
            "and imports from earlier calls are gone (files are gone too if the sandbox was "
            "replaced)"
        )

    output = RunCodeOutput(
        stdout=streams["stdout"][0],
        stderr=streams["stderr"][0],
        results=results,
        error=error,
        execution_count=execution.execution_count,
        duration_ms=round(execution.duration * 1000, 3) if execution.duration is not None else None,
        truncated=state["truncated"],
        state_reset=execution.state_reset,
        notes=notes,
        usage=_usage(execution),
    )
    structured = output.model_dump(mode="json")
    structured.update(extra or {})
    # The old E2B server's text: {"stdout": [chunks], "stderr": [chunks]}; new keys beside them.
    legacy = dict(structured)
    legacy["stdout"] = streams["stdout"][1]
    legacy["stderr"] = streams["stderr"][1]
    # One line: json's C encoder does not indent, and the Python one cost more than the
    # rest of the rendering; JSON readers (and models) do not need the whitespace.
    text = TextContent(type="text", text=json.dumps(legacy, ensure_ascii=False))
    return Rendered(
        structured=structured,
        content=[text, *state["images"]],
        is_error=error is not None,
    )
