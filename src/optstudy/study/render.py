"""Render a report's blocks (headings, paragraphs, tables, images) as Markdown and as one
self-contained HTML page (images inline as base64 PNG)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

# A report is a list of blocks: ("h1" | "h2" | "p", text), ("table", DataFrame), ("img", PNG).
Block = tuple[str, object]

STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:auto}"
    "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;"
    "border-bottom:1px solid #ddd;text-align:left;vertical-align:top}img{max-width:100%}"
)


def markdown(blocks: Iterable[Block]) -> str:
    """The blocks as Markdown (images by file name, next to the report)."""
    parts = []
    for kind, content in blocks:
        if kind == "h1":
            parts.append(f"# {content}")
        elif kind == "h2":
            parts.append(f"## {content}")
        elif kind == "p":
            parts.append(str(content))
        elif kind == "table":
            assert isinstance(content, pd.DataFrame)
            parts.append(content.to_markdown(index=False))
        elif kind == "img":
            assert isinstance(content, Path)
            parts.append(f"![{content.stem}]({content.name})")
    return "\n\n".join(parts) + "\n"


def page(blocks: Iterable[Block], title: str) -> str:
    """The blocks as one HTML page with every image inline."""
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(str(content))}</p>")
        elif kind == "table":
            assert isinstance(content, pd.DataFrame)
            parts.append(content.to_html(index=False, border=0, na_rep="–"))
        elif kind == "img":
            assert isinstance(content, Path)
            data = base64.b64encode(content.read_bytes()).decode()
            alt = html.escape(content.stem)
            parts.append(f'<img alt="{alt}" src="data:image/png;base64,{data}">')
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
