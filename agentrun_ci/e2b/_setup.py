"""Code the shim sends into contexts: the rich-result formatters and environment variables.

AgentRun's cloud kernels are plain IPython kernels we do not control, so E2B's
DataFrame and chart extraction is installed from the outside: when
`agentrun_ci.e2b` creates a Python context it runs `FORMATTERS` once in it
(as `FORMATTERS_CELL`, one string literal that IPython need not pre-process). The
snippet registers two IPython display formatters that add JSON MIME types to
every display of a pandas DataFrame (`DATA_MIME`) or a matplotlib figure
(`CHART_MIME`); `Result.data` and `Result.chart` are parsed from them. It also
makes PIL images show up as results (`Image.show()`, `Image.save(path)`), as in
E2B's kernel. It imports neither pandas nor matplotlib nor PIL: each formatter
looks at `sys.modules` first, so a context that never uses them pays nothing.

Every hidden Python run ends with `UNCOUNT`, which takes one off IPython's
execution counter, so the user's first run is still `execution_count == 1`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping

__all__ = [
    "CHART_MIME",
    "DATA_MIME",
    "FORMATTERS",
    "FORMATTERS_CELL",
    "OWN_MIMES",
    "UNCOUNT",
    "bash_prefix",
    "env_restore",
    "env_set",
]

DATA_MIME = "application/vnd.agentrun-ci.e2b-data+json"
CHART_MIME = "application/vnd.agentrun-ci.e2b-chart+json"
OWN_MIMES = frozenset({DATA_MIME, CHART_MIME})

#: appended to every hidden Python run, so it does not count as an execution
UNCOUNT = "get_ipython().execution_count -= 1\n"

# One function, called and deleted: nothing is left in the user's namespace.
FORMATTERS = """
def _agentrun_e2b_setup():
    import datetime, importlib.abc, json, os, re, sys
    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    DATA, CHART = @MIMES@
    UNIT = re.compile(r"\\s\\(([^()]*)\\)|\\[([^\\[\\]]*)\\]")

    def num(v):
        return round(float(v), 9)

    def value(v):
        if isinstance(v, str):
            return v
        if isinstance(v, datetime.date):
            return v.isoformat()
        if getattr(getattr(v, "dtype", None), "kind", "") == "M":
            return str(v.astype("datetime64[s]"))
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v)

    def text_or_none(t):
        return t if t else None

    def unit(label):
        m = UNIT.search(label or "")
        return (m.group(1) or m.group(2)) if m else None

    def frame(pd, df):
        split = json.loads(df.to_json(orient="split", date_format="iso"))
        cols = [str(c) for c in split["columns"]]
        return {c: [row[i] for row in split["data"]] for i, c in enumerate(cols)}

    def axis_info(axis):
        import matplotlib.category as mcat, matplotlib.dates as mdates
        locs = list(axis.get_majorticklocs())
        labels = [t.get_text() for t in axis.get_majorticklabels()]
        fmt = axis.get_major_formatter()
        if isinstance(fmt, (mdates.AutoDateFormatter, mdates.ConciseDateFormatter,
                            mdates.DateFormatter)):
            return [mdates.num2date(t).isoformat() for t in locs], labels, "datetime"
        scale = axis.get_scale()
        if isinstance(fmt, mcat.StrCategoryFormatter):
            scale = "categorical"
        return [float(t) for t in locs], labels, scale

    def tick_label(axis, pos):
        for loc, t in zip(axis.get_majorticklocs(), axis.get_majorticklabels()):
            if abs(loc - pos) < 1e-6:
                return t.get_text()
        return "%g" % pos

    def base(ax, kind):
        return {"type": kind, "title": text_or_none(ax.get_title()), "elements": []}

    def planar(ax, kind):
        out = base(ax, kind)
        x, y = text_or_none(ax.get_xlabel()), text_or_none(ax.get_ylabel())
        out.update(x_label=x, y_label=y, x_unit=unit(x), y_unit=unit(y))
        return out

    def points(ax, kind):
        out = planar(ax, kind)
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            ticks, labels, scale = axis_info(axis)
            out[name + "_ticks"], out[name + "_tick_labels"] = ticks, labels
            out[name + "_scale"] = scale
        if kind == "line":
            for i, line in enumerate(ax.lines):
                label = line.get_label()
                xs, ys = line.get_xdata(), line.get_ydata()
                out["elements"].append({
                    "label": label if not label.startswith("_") else "Line %d" % i,
                    "points": [[value(a), value(b)] for a, b in zip(xs, ys)]})
        else:
            for coll in ax.collections:
                out["elements"].append({
                    "label": coll.get_label(),
                    "points": [[value(a), value(b)] for a, b in coll.get_offsets()]})
        return out

    def bars(ax):
        out = planar(ax, "bar")
        horizontal = False
        for i, container in enumerate(ax.containers):
            group = container.get_label() or ""
            group = group if not group.startswith("_") else "Group %d" % i
            horizontal = getattr(container, "orientation", "vertical") == "horizontal"
            for rect in container:
                if horizontal:
                    pos, val = rect.get_y() + rect.get_height() / 2, rect.get_width()
                else:
                    pos, val = rect.get_x() + rect.get_width() / 2, rect.get_height()
                axis = ax.yaxis if horizontal else ax.xaxis
                out["elements"].append(
                    {"label": tick_label(axis, pos), "group": group, "value": num(val)})
        if horizontal:  # the category axis is called x, as for vertical bars
            out["x_label"], out["y_label"] = out["y_label"], out["x_label"]
            out["x_unit"], out["y_unit"] = out["y_unit"], out["x_unit"]
        return out

    def pie(ax):
        out = base(ax, "pie")
        for wedge in ax.patches:
            out["elements"].append({"label": wedge.get_label(),
                                    "angle": num(abs(wedge.theta2 - wedge.theta1)),
                                    "radius": num(wedge.r)})
        return out

    def boxes(ax):
        out = planar(ax, "box_and_whisker")
        segs = [ln for ln in ax.lines if len(ln.get_xdata()) == 2]
        const_x = sum(1 for ln in segs if ln.get_xdata()[0] == ln.get_xdata()[1])
        vertical = const_x <= len(segs) - const_x
        def xy(line):
            xs, ys = [float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()]
            return (xs, ys) if vertical else (ys, xs)
        cat_axis = ax.xaxis if vertical else ax.yaxis
        eps = 1e-9
        for patch in ax.patches:
            verts = patch.get_path().vertices
            xs, ys = (verts[:, 0], verts[:, 1]) if vertical else (verts[:, 1], verts[:, 0])
            x0, x1, q1, q3 = float(min(xs)), float(max(xs)), float(min(ys)), float(max(ys))
            box = {"label": tick_label(cat_axis, (x0 + x1) / 2), "min": q1,
                   "first_quartile": num(q1), "median": None, "third_quartile": num(q3),
                   "max": q3, "outliers": []}
            for line in ax.lines:
                lx, ly = xy(line)
                if not lx or min(lx) < x0 - eps or max(lx) > x1 + eps:
                    continue
                if line.get_linestyle() in ("None", "", " "):
                    box["outliers"] += [num(v) for v in ly]
                elif len(lx) == 2 and lx[0] == lx[1]:
                    if max(ly) <= q1 + eps:
                        box["min"] = min(ly)
                    elif min(ly) >= q3 - eps:
                        box["max"] = max(ly)
                elif len(ly) == 2 and ly[0] == ly[1] and q1 - eps <= ly[0] <= q3 + eps:
                    box["median"] = num(ly[0])
            box["min"], box["max"] = num(box["min"]), num(box["max"])
            out["elements"].append(box)
        if not vertical:
            out["x_label"], out["y_label"] = out["y_label"], out["x_label"]
            out["x_unit"], out["y_unit"] = out["y_unit"], out["x_unit"]
        return out

    def axes_chart(ax):
        from matplotlib.collections import PathCollection
        from matplotlib.patches import PathPatch, Rectangle, Wedge
        lines, colls, patches = list(ax.lines), list(ax.collections), list(ax.patches)
        if list(ax.images):
            return base(ax, "unknown")
        if patches and all(isinstance(p, Wedge) for p in patches) and not lines and not colls:
            return pie(ax)
        if patches and all(isinstance(p, PathPatch) for p in patches) and lines and not colls:
            return boxes(ax)
        if (patches and all(isinstance(p, Rectangle) for p in patches) and ax.containers
                and not lines and not colls):
            return bars(ax)
        if lines and not patches and not colls:
            return points(ax, "line")
        if colls and all(isinstance(c, PathCollection) for c in colls) and not patches \\
                and not lines:
            return points(ax, "scatter")
        return base(ax, "unknown")

    def figure(fig):
        axes = fig.get_axes()
        if not axes or not any(ax.has_data() for ax in axes):
            return None
        try:
            fig.draw_without_rendering()  # tick labels are only known after a layout
        except Exception:
            pass
        if len(axes) == 1:
            return axes_chart(axes[0])
        title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else None
        return {"type": "superchart", "title": text_or_none(title),
                "elements": [axes_chart(ax) for ax in axes]}

    class Data(BaseFormatter):
        format_type = Unicode(DATA)
        print_method = ObjectName("_repr_agentrun_data_")
        _return_type = (dict,)

        def __call__(self, obj):
            pd = sys.modules.get("pandas")
            if pd is None or not isinstance(obj, pd.DataFrame):
                return None
            try:
                return frame(pd, obj)
            except Exception:
                return None

    class Chart(BaseFormatter):
        format_type = Unicode(CHART)
        print_method = ObjectName("_repr_agentrun_chart_")
        _return_type = (dict,)

        def __call__(self, obj):
            mpl_figure = sys.modules.get("matplotlib.figure")
            if mpl_figure is None or not isinstance(obj, mpl_figure.Figure):
                return None
            try:
                return figure(obj)
            except Exception:
                return None

    def patch_pil(image_module):
        from IPython.display import display
        if getattr(image_module.Image, "_agentrun_e2b", False):
            return
        save = image_module.Image.save
        def show(self, *args, **kwargs):
            display(self)
        def save_and_show(self, fp, *args, **kwargs):
            if isinstance(fp, (str, os.PathLike)):
                display(self)
            return save(self, fp, *args, **kwargs)
        image_module.Image.show, image_module.Image.save = show, save_and_show
        image_module.Image._agentrun_e2b = True

    class PILHook(importlib.abc.MetaPathFinder):
        _agentrun_e2b = True  # a hook of ours (from this run or an earlier one): skipped

        def find_spec(self, name, path, target=None):
            if name != "PIL.Image":
                return None
            for finder in sys.meta_path:
                if getattr(finder, "_agentrun_e2b", False) or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None and spec.loader is not None:
                    break
            else:
                return None
            run = spec.loader.exec_module
            def exec_module(module):
                run(module)
                patch_pil(module)
            spec.loader.exec_module = exec_module
            return spec

    ip = get_ipython()
    ip.display_formatter.formatters[DATA] = Data(parent=ip.display_formatter)
    ip.display_formatter.formatters[CHART] = Chart(parent=ip.display_formatter)
    if "PIL.Image" in sys.modules:
        patch_pil(sys.modules["PIL.Image"])
    else:  # one hook, however often this runs in a kernel
        sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "_agentrun_e2b", False)]
        sys.meta_path.insert(0, PILHook())

_agentrun_e2b_setup()
del _agentrun_e2b_setup
""".replace("@MIMES@", f"{DATA_MIME!r}, {CHART_MIME!r}")

#: what is sent: `FORMATTERS` as one string literal, compiled and run in a private
#: namespace. IPython pre-processes every line of a cell's code (input transformers,
#: the top-level-await check, history), which costs ~100 ms for the snippet's 10 KB;
#: one literal costs about what `1 + 1` does (benchmarks/e2b_formatters.py).
FORMATTERS_CELL = f"exec(compile({FORMATTERS!r}, '<agentrun-ci e2b setup>', 'exec'), {{}})\n"


def _check_envs(envs: Mapping[str, str]) -> dict[str, str]:
    from .._errors import InvalidArgumentError

    out: dict[str, str] = {}
    for key, val in envs.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise InvalidArgumentError(f"envs: {key!r} is not a valid variable name")
        if not isinstance(val, str):
            raise InvalidArgumentError(f"envs[{key!r}] must be a string, got {type(val).__name__}")
        out[key] = val
    return out


def env_set(language: str, envs: Mapping[str, str], *, save: bool) -> str:
    """Code that sets `envs` in a context (remembering the old values when `save`)."""
    envs = _check_envs(envs)
    blob = json.dumps(envs)
    if language == "python":
        saved = (
            f"_o._agentrun_e2b_saved = {{k: _o.environ.get(k) for k in {list(envs)!r}}}\n"
            if save
            else ""
        )
        return f"import os as _o\n{saved}_o.environ.update({blob})\ndel _o\n"
    saved = (
        f"globalThis.__agentrunE2bSaved = Object.fromEntries(Object.keys({blob})"
        ".map((k) => [k, process.env[k]]));\n"
        if save
        else ""
    )
    return f"{saved}Object.assign(process.env, {blob});\nvoid 0;\n"


def env_restore(language: str) -> str:
    """Code that puts back the values `env_set(..., save=True)` remembered."""
    if language == "python":
        return (
            "import os as _o\n"
            "for _k, _v in getattr(_o, '_agentrun_e2b_saved', {}).items():\n"
            "    _o.environ.pop(_k, None) if _v is None else _o.environ.__setitem__(_k, _v)\n"
            "_o._agentrun_e2b_saved = {}\n"
            "del _o\n"
            "_k = _v = None\ndel _k, _v\n"
        )
    return (
        "for (const [k, v] of Object.entries(globalThis.__agentrunE2bSaved || {})) {\n"
        "  if (v === undefined) delete process.env[k]; else process.env[k] = v;\n"
        "}\nglobalThis.__agentrunE2bSaved = {};\nvoid 0;\n"
    )


def bash_prefix(envs: Mapping[str, str]) -> str:
    """`export` lines that give a shell command `envs`."""
    envs = _check_envs(envs)
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in envs.items())
