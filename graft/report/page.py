"""One HTML page, everything inlined: plotly.js, styles and images, so it opens offline from any folder.

Content is passed in as data and escaped by Jinja; only the chart fragments (made by plotly) and the
thumbnails (base64 made here) are trusted markup.
"""

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment
from markupsafe import Markup
from PIL import Image
from plotly.offline import get_plotlyjs

from graft.atomic import write_text
from graft.data.images import load_image
from graft.version import __version__

THUMBNAIL = 112  # pixels on the longer side: large enough to see a digit's strokes, small enough for 12 in a row


@dataclass
class Section:
    """A titled block of the page: any of an explanatory line, a chart, a table, a gallery."""

    title: str
    anchor: str
    note: str = ""
    chart: Markup | None = None
    table: dict[str, Any] | None = None  # {"columns": [...], "rows": [[...], ...], "links": {row index: href}}
    gallery: list[dict[str, Any]] = field(default_factory=list)
    charts: list[Markup] = field(default_factory=list)
    cards: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)  # (title, [(name, value), ...])
    link: tuple[str, str] | None = None  # (text, href)


def thumbnail(path: Path) -> str:
    """``path`` as a PNG data URI; small images are enlarged without smoothing so they stay sharp."""
    img = load_image(path, 3)
    scale = THUMBNAIL / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="graft {{ version }}">
<title>{{ title }} · graft report</title>
<style>
  :root { --ink: #1d2433; --muted: #5c6577; --line: #e3e7ee; --bg: #f5f7fa; --card: #fff; --accent: #0f6fde; --bad: #c0392b; }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--bg); color: var(--ink); font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  header { background: linear-gradient(120deg, #14213d, #1f4e8c); color: #fff; padding: 28px 0 24px; }
  .wrap { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
  header .kind { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; opacity: .75; }
  header h1 { margin: 4px 0 6px; font-size: 28px; font-weight: 650; }
  header .subtitle { opacity: .85; }
  nav { margin-top: 14px; display: flex; flex-wrap: wrap; gap: 6px 16px; font-size: 14px; }
  nav a { color: #cfe1ff; text-decoration: none; } nav a:hover { text-decoration: underline; }
  .kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin: -18px 0 8px; }
  .kpi { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 16px; box-shadow: 0 1px 3px rgba(20,33,61,.08); }
  .kpi .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .05em; }
  .kpi .value { font-size: 22px; font-weight: 650; margin-top: 2px; font-variant-numeric: tabular-nums; }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 12px; margin: 18px 0; padding: 18px 22px; box-shadow: 0 1px 3px rgba(20,33,61,.06); }
  section h2 { margin: 0 0 4px; font-size: 19px; }
  .note { color: var(--muted); margin: 0 0 10px; max-width: 80ch; }
  table { border-collapse: collapse; width: 100%; font-size: 14px; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
  th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
  td.num, th.num { text-align: right; }
  tr:hover td { background: #f8fafc; }
  a { color: var(--accent); }
  code { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 13px; word-break: break-all; }
  .gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 12px; }
  figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px; text-align: center; background: #fbfcfe; }
  figure img { width: 112px; height: 112px; object-fit: contain; image-rendering: pixelated; background: #fff; border-radius: 4px; }
  figcaption { font-size: 13px; margin-top: 6px; }
  figcaption .pred { color: var(--bad); font-weight: 600; }
  figcaption .path { display: block; color: var(--muted); font-size: 11px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .two { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; } @media (max-width: 900px) { .two { grid-template-columns: 1fr; } }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
  .card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fbfcfe; }
  .card h3 { margin: 0 0 6px; font-size: 13px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; font-size: 14px; }
  dt { color: var(--muted); } dd { margin: 0; font-variant-numeric: tabular-nums; word-break: break-word; }
  footer { color: var(--muted); font-size: 12px; padding: 8px 0 32px; }
</style>
<script>{{ plotlyjs }}</script>
</head>
<body>
<header><div class="wrap">
  <div class="kind">{{ kind }}</div>
  <h1>{{ title }}</h1>
  <div class="subtitle">{{ subtitle }}</div>
  <nav>{% for s in sections %}<a href="#{{ s.anchor }}">{{ s.title }}</a>{% endfor %}</nav>
</div></header>
<main class="wrap">
{% if kpis %}<div class="kpis">{% for label, value in kpis %}<div class="kpi"><div class="label">{{ label }}</div><div class="value">{{ value }}</div></div>{% endfor %}</div>{% endif %}
{% for s in sections %}
<section id="{{ s.anchor }}">
  <h2>{{ s.title }}</h2>
  {% if s.note %}<p class="note">{{ s.note }}</p>{% endif %}
  {% if s.link %}<p><a href="{{ s.link[1] }}">{{ s.link[0] }}</a></p>{% endif %}
  {% if s.chart %}{{ s.chart }}{% endif %}
  {% if s.charts %}<div class="two">{% for c in s.charts %}<div>{{ c }}</div>{% endfor %}</div>{% endif %}
  {% if s.table %}<table>
    <thead><tr>{% for c in s.table.columns %}<th{% if c in s.table.get("numeric", []) %} class="num"{% endif %}>{{ c.replace("_", " ") }}</th>{% endfor %}</tr></thead>
    <tbody>{% for row in s.table.rows %}<tr>{% for cell in row %}{% set c = s.table.columns[loop.index0] %}<td{% if c in s.table.get("numeric", []) %} class="num"{% endif %}>
      {%- if loop.first and s.table.get("links", {}).get(row[0]) %}<a href="{{ s.table.links[row[0]] }}">{{ cell }}</a>{% else %}{{ cell }}{% endif -%}
    </td>{% endfor %}</tr>{% endfor %}</tbody>
  </table>{% endif %}
  {% if s.cards %}<div class="cards">{% for title, items in s.cards %}<div class="card"><h3>{{ title }}</h3><dl>{% for k, v in items %}<dt>{{ k }}</dt><dd>{{ v }}</dd>{% endfor %}</dl></div>{% endfor %}</div>{% endif %}
  {% if s.gallery %}<div class="gallery">{% for g in s.gallery %}<figure><img src="{{ g.src }}" alt="{{ g.path }}">
    <figcaption>true <b>{{ g.true }}</b> · predicted <span class="pred">{{ g.predicted }}</span> ({{ "%.1f" % (100 * g.probability) }}%)<span class="path" title="{{ g.path }}">{{ g.name }}</span></figcaption></figure>{% endfor %}</div>{% endif %}
</section>
{% endfor %}
<footer>Made by graft {{ version }} from the files in this folder; regenerate with <code>graft report {{ folder }}</code>.</footer>
</main>
</body>
</html>
"""

_TEMPLATE = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(TEMPLATE)


def render(
    target: Path, *, kind: str, title: str, subtitle: str, kpis: list[tuple[str, str]], sections: list[Section], folder: Path
) -> Path:
    """Write the page to ``target`` (through a temporary file, so a reader never sees half a page)."""
    html = _TEMPLATE.render(
        version=__version__,
        kind=kind,
        title=title,
        subtitle=subtitle,
        kpis=kpis,
        sections=sections,
        folder=str(folder),
        plotlyjs=Markup(get_plotlyjs()),
    )
    write_text(target, html)
    return target
