"""One document model (sections of text, tables and images) rendered as Markdown and as one HTML page.

Building the report once as data and rendering it twice keeps `report.md` and `report.html` in step;
the HTML embeds every image as base64 so the file can be mailed or opened anywhere on its own.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

UNDEFINED = "undefined"


def fmt(value: object, digits: int = 4) -> str:
    """A number with fixed decimals; None -> "undefined"; ints and text unchanged."""
    if value is None:
        return UNDEFINED
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: float | None) -> str:
    return UNDEFINED if value is None else f"{100 * value:.2f}%"


@dataclass
class Table:
    headers: Sequence[str]
    rows: list[Sequence[object]]
    caption: str = ""


@dataclass
class Image:
    path: Path | None
    caption: str
    missing: str = "not drawn"  # why, when path is None


@dataclass
class Link:
    href: str
    text: str


@dataclass
class Details:
    """Blocks folded away under a one-line summary (HTML and GitHub Markdown `<details>`): detail a
    reader may want, not what they should have to scroll past."""

    summary: str
    blocks: list[object] = field(default_factory=list)


@dataclass
class Section:
    title: str
    blocks: list[object] = field(default_factory=list)
    level: int = 2


def _relative(path: Path, base: Path | None) -> str:
    return os.path.relpath(path, base) if base is not None else path.name


def _md_cell(value: object) -> str:
    return fmt(value).replace("|", "\\|")


def to_markdown(sections: Sequence[Section], title: str, banner: str = "", base: Path | None = None) -> str:
    """Markdown with images linked relative to `base` (the folder the file is written to)."""
    lines = [f"# {title}", ""]
    if banner:
        lines += [f"> **{banner}**", ""]
    for section in sections:
        lines += ["#" * section.level + " " + section.title, ""]
        lines += _markdown_blocks(section.blocks, base)
    return "\n".join(lines)


def _markdown_blocks(blocks: Sequence[object], base: Path | None) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Details):
            lines += [f"<details><summary>{html.escape(block.summary)}</summary>", ""]
            lines += _markdown_blocks(block.blocks, base)
            lines += ["</details>", ""]
            continue
        if isinstance(block, Table):
            lines.append("| " + " | ".join(block.headers) + " |")
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            if block.caption:
                lines += ["", f"*{block.caption}*"]
        elif isinstance(block, Image):
            lines.append(
                f"![{block.caption}]({_relative(block.path, base)})"
                if block.path and block.path.is_file()
                else f"*{block.caption}: {block.missing}.*"
            )
        elif isinstance(block, Link):
            lines.append(f"[{block.text}]({block.href})")
        else:
            lines.append(str(block))
        lines.append("")
    return lines


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
td.undefined { color: #a00; font-style: italic; }
caption { caption-side: bottom; font-style: italic; color: #555; padding-top: .3em; text-align: left; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; }
.banner { background: #fff3cd; border: 2px solid #e0a800; padding: .8em 1em; font-weight: bold; }
.missing { color: #777; font-style: italic; }
nav ul { columns: 2; }
"""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for cell in row:
            text = fmt(cell)
            css = ' class="undefined"' if text == UNDEFINED else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_image(image: Image) -> str:
    if image.path is None or not image.path.is_file():
        return f'<p class="missing">{html.escape(image.caption)}: {html.escape(image.missing)}.</p>'
    data = base64.b64encode(image.path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(image.caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(image.caption)}</figcaption></figure>"
    )


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _html_blocks(blocks: Sequence[object]) -> list[str]:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Details):
            inner = "".join(_html_blocks(block.blocks))
            parts.append(f"<details><summary>{html.escape(block.summary)}</summary>{inner}</details>")
        elif isinstance(block, Table):
            parts.append(_html_table(block))
        elif isinstance(block, Image):
            parts.append(_html_image(block))
        elif isinstance(block, Link):
            parts.append(f'<p><a href="{html.escape(block.href)}">{html.escape(block.text)}</a></p>')
        else:
            parts.append(f"<p>{html.escape(str(block))}</p>")
    return parts


def to_html(sections: Sequence[Section], title: str, banner: str = "") -> str:
    """A self-contained page: inline CSS, images as data URIs, a table of contents."""
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    if banner:
        parts.append(f'<div class="banner" role="alert">{html.escape(banner)}</div>')
    toc = "".join(
        f'<li><a href="#{_anchor(s.title)}">{html.escape(s.title)}</a></li>' for s in sections if s.level == 2
    )
    parts.append(f"<nav><h2>Contents</h2><ul>{toc}</ul></nav>")
    for section in sections:
        level = min(max(section.level, 2), 4)
        parts.append(
            f'<section><h{level} id="{_anchor(section.title)}">{html.escape(section.title)}</h{level}>'
        )
        parts += _html_blocks(section.blocks)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
