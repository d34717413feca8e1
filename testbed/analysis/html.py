"""The comparison as one self-contained HTML page (``report.html``), from templates/report.html.j2.

Everything is inside the page: CSS inline, plots as base64 data URIs, so the file can be mailed or
opened from anywhere. Wide tables scroll inside their box; images shrink to the page width.
"""
from __future__ import annotations

import base64
import os

from testbed.analysis.report import atomic_write

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def render(title: str, notes: list[str], warnings: list[str], header: list[tuple[str, bool]],
           rows: list[list[tuple[str, bool]]], caption: str, images: list[str], steps: dict | None = None) -> str:
    """The page as text. ``header``/``rows`` cells are (text, is_text_column); ``steps`` is None or
    {"header": [...], "rows": [(label, [cells])], "caption": str}."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    embedded = []
    for path in images:
        with open(path, "rb") as fh:
            embedded.append({"name": os.path.basename(path), "data": base64.b64encode(fh.read()).decode("ascii")})
    return env.get_template("report.html.j2").render(title=title, notes=notes, warnings=warnings, header=header,
                                                     rows=rows, caption=caption, images=embedded, steps=steps)


def write_html(path: str, **page) -> str:
    text = render(**page)
    with atomic_write(path) as fh:
        fh.write(text)
    return path
