"""The run report: ``report.json`` (machine-readable, full precision), ``report.md`` and a self-contained
``report.html`` (plots embedded) written side by side into a run folder.

The report dict is free-form. Top-level non-dict fields form the summary table; ``report["test"]`` forms the
test-metrics table, where a key ``baseline_<k>`` is shown beside metric ``<k>``; every other dict-valued field
becomes its own key/value section. Nested dicts are flattened to ``a/b`` keys.
"""

from __future__ import annotations

import base64
import html
import numbers
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtrain.io.atomic import atomic_write_json, atomic_write_text

_BASELINE_PREFIX = "baseline_"
_MISSING = "—"
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.75em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
img { max-width: 100%; }
""".strip()


@dataclass(frozen=True)
class _Table:
    """One report section: a heading and a table of already formatted (not yet escaped) cells."""

    heading: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]


def write_report(
    run_dir: str | os.PathLike[str], report: Mapping[str, Any], plots: Sequence[Path] = ()
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``run_dir`` (created if needed).

    ``report.json`` holds ``report`` unchanged plus ``"plots"``: the plot paths relative to ``run_dir`` (POSIX
    separators). The Markdown links the plots by those relative paths; the HTML embeds them as base64 PNG data
    URIs and escapes every string. Floats show 4 significant digits in md/html. Raises ``FileNotFoundError``
    before writing anything if a plot does not exist. Returns ``{"json": ..., "md": ..., "html": ...}``.
    """
    root = Path(run_dir)
    missing = [str(p) for p in plots if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"report plots not found: {', '.join(missing)}")
    relative = [_relative(p, root) for p in plots]
    title = _title(report, root)
    tables = _tables(report)
    return {
        "json": atomic_write_json(root / "report.json", {**report, "plots": relative}),
        "md": atomic_write_text(root / "report.md", _render_md(title, tables, relative)),
        "html": atomic_write_text(root / "report.html", _render_html(title, tables, relative, plots)),
    }


def _relative(plot: Path, root: Path) -> str:
    return Path(os.path.relpath(Path(plot).resolve(), root.resolve())).as_posix()


def _title(report: Mapping[str, Any], root: Path) -> str:
    names = [str(report[k]) for k in ("recipe", "experiment") if report.get(k) is not None]
    return f"Run report: {' / '.join(names) if names else root.resolve().name}"


def _fmt(value: Any) -> str:
    """A cell: floats with 4 significant digits, None as a dash, sequences comma-joined."""
    if value is None:
        return _MISSING
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with ``a/b`` keys, in insertion order."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def _metric_and_baseline(flat: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Pair each metric with its baseline: a key whose path has a ``baseline_`` segment is the baseline of
    the key with that prefix removed (``baseline_mse`` → ``mse``, ``per_class/baseline_a`` → ``per_class/a``).
    A baseline without a metric keeps a row with the metric missing."""
    pairs: dict[str, list[Any]] = {}
    for key, value in flat.items():
        parts = key.split("/")
        index = next((i for i, p in enumerate(parts) if p.startswith(_BASELINE_PREFIX)), None)
        if index is None:
            pairs.setdefault(key, [None, None])[0] = value
        else:
            parts[index] = parts[index].removeprefix(_BASELINE_PREFIX)
            pairs.setdefault("/".join(parts), [None, None])[1] = value
    return pairs


def _tables(report: Mapping[str, Any]) -> list[_Table]:
    """Summary, test metrics, then one key/value table per other dict-valued field; empty ones left out."""
    summary = [(k, _fmt(v)) for k, v in report.items() if not isinstance(v, Mapping)]
    test = report.get("test")
    pairs = _metric_and_baseline(_flatten(test)) if isinstance(test, Mapping) else {}
    test_rows = [(k, _fmt(model), _fmt(baseline)) for k, (model, baseline) in pairs.items()]
    tables = [
        _Table("Summary", ("field", "value"), summary),
        _Table("Test metrics", ("metric", "model", "baseline"), test_rows),
    ]
    for key, value in report.items():
        if key != "test" and isinstance(value, Mapping):
            rows = [(k, _fmt(v)) for k, v in _flatten(value).items()]
            tables.append(_Table(key.replace("_", " ").capitalize(), ("key", "value"), rows))
    return [t for t in tables if t.rows]


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md_cell(c) for c in cells) + " |"


def _render_md(title: str, tables: Sequence[_Table], plots: Sequence[str]) -> str:
    lines = [f"# {title}", ""]
    for table in tables:
        lines += [f"## {table.heading}", "", _md_row(table.header), _md_row(["---"] * len(table.header))]
        lines += [_md_row(row) for row in table.rows] + [""]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{Path(p).stem}]({urllib.parse.quote(p)})\n" for p in plots]
    return "\n".join(lines).rstrip("\n") + "\n"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _html_cell(text: str) -> str:
    css = ' class="num"' if _is_number(text) else ""
    return f"<td{css}>{html.escape(text)}</td>"


def _html_table(table: _Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.header)
    body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in table.rows)
    heading = f"<h2>{html.escape(table.heading)}</h2>"
    return f"{heading}\n<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(relative: str, plot: Path) -> str:
    data = base64.b64encode(Path(plot).read_bytes()).decode("ascii")
    caption = html.escape(relative)
    image = f'<img alt="{caption}" src="data:image/png;base64,{data}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _render_html(title: str, tables: Sequence[_Table], relative: Sequence[str], plots: Sequence[Path]) -> str:
    parts = [_html_table(t) for t in tables]
    if plots:
        parts += ["<h2>Plots</h2>", *(_html_figure(r, p) for r, p in zip(relative, plots, strict=True))]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )
