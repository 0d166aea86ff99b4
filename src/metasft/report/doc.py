"""A report as a list of blocks, rendered both as Markdown and as self-contained HTML.

Building blocks rather than Markdown text means the HTML needs no Markdown parser and every cell
and paragraph is escaped exactly once. Inline markup in text is limited to `code` and **bold**.

The HTML is one file: figures are embedded as base64 PNG (a copy mailed alone shows them all), the
Markdown links them relatively. Headings get GitHub's anchors in both, so the table of contents
links work in the HTML and on GitHub alike.
"""
from __future__ import annotations

import base64
import html
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Callout:
    """A warning or note that must not be missed: a blockquote in Markdown, a coloured box in HTML."""
    kind: str  # "warning" | "note"
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Badge:
    """A table cell or word that carries a status: bold in Markdown, coloured in HTML (css class
    `badge <kind>`; the kinds with a colour are in _CSS)."""
    text: str
    kind: str

    def __str__(self) -> str:
        return self.text


@dataclass
class Table:
    header: list[str]
    rows: list[list[str | Badge]]
    caption: str = ""
    css: str = ""  # an extra HTML class (e.g. "summary")


@dataclass
class Image:
    path: str  # the PNG, relative to the report directory
    alt: str
    caption: str = ""
    vector: str = ""  # the same figure as SVG or PDF, relative to the report directory
    width: int | None = None  # CSS px to show it at in HTML (so every figure's text has one size)


@dataclass
class Contents:
    """A table of contents of the headings that follow it, down to `depth`, linked to their anchors."""
    depth: int = 2


@dataclass
class Code:
    text: str


Block = Heading | Para | Callout | Bullets | Table | Image | Code | Contents | Badge


def anchors(doc: "Document") -> list[tuple[Heading, str]]:
    """Each heading with its anchor, as GitHub derives it from the text (lower case, punctuation
    dropped, spaces to hyphens, repeats numbered -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = []
    for b in doc.blocks:
        if isinstance(b, Heading):
            text = re.sub(r"[`*]", "", b.text).strip().lower()
            slug = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN").replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.append((b, slug if n == 0 else f"{slug}-{n}"))
    return out


def _contents(doc: "Document", where: Contents) -> list[tuple[int, str, str]]:
    """(level, text, anchor) of the headings after the Contents block `where`, down to its depth."""
    after = doc.blocks[next(i for i, b in enumerate(doc.blocks) if b is where) + 1:]
    later = {id(b) for b in after}
    return [(h.level, h.text, slug) for h, slug in anchors(doc) if id(h) in later and h.level <= where.depth]


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


# ------------------------------------------------------------------------------------------ markdown
def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def map_text(doc: Document, fn) -> None:
    """Apply `fn` (str -> str) to every prose text of `doc` in place: headings, paragraphs, callouts,
    bullets, table headers, cells and captions, figure captions; not Code blocks, whose text is quoted
    (model outputs), nor Badges (a status word)."""
    def cell(c):
        return c if isinstance(c, Badge) else fn(str(c))

    for b in doc.blocks:
        if isinstance(b, (Heading, Para, Callout)):
            b.text = fn(b.text)
        elif isinstance(b, Bullets):
            b.items = [fn(i) for i in b.items]
        elif isinstance(b, Table):
            b.header = [fn(h) for h in b.header]
            b.rows = [[cell(c) for c in row] for row in b.rows]
            b.caption = fn(b.caption)
        elif isinstance(b, Image):
            b.caption = fn(b.caption)


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}\n{text}\n{ticks}"


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * (b.level + 1)} {b.text}")
        elif isinstance(b, Contents):
            out.append("\n".join(f"{'  ' * (level - 1)}- [{text}](#{slug})" for level, text, slug in _contents(doc, b)))
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Callout):
            label = "Warning" if b.kind == "warning" else "Note"
            out.append("\n".join(f"> {line}" if i else f"> **{label}:** {line}"
                                 for i, line in enumerate(b.text.splitlines() or [""])))
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = [f"*{b.caption}*", ""] if b.caption else []
            lines.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            lines.append("|" + "|".join("---" for _ in b.header) + "|")
            lines += ["| " + " | ".join(_md_cell(f"**{c}**" if isinstance(c, Badge) else c) for c in row) + " |"
                      for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            line = f"![{b.alt}]({b.path})"
            note = " ".join(x for x in (f"*{b.caption}*" if b.caption else "",
                                        f"([vector]({b.vector}))" if b.vector else "") if x)
            out.append(f"{line}\n\n{note}" if note else line)
        elif isinstance(b, Code):
            out.append(_fence(b.text))
        elif isinstance(b, Badge):
            out.append(f"**{b.text}**")
        else:
            raise TypeError(f"unknown block {b!r}")
    return "\n\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ html
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 1em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
caption { caption-side: top; font-style: italic; text-align: left; padding-bottom: 0.3em; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.warning { background: #fff3cd; border-left: 5px solid #e0a800; padding: 0.6em 1em; }
.note { background: #eef5ff; border-left: 5px solid #5b8def; padding: 0.6em 1em; }
.warning, .note { margin: 0.6em 0; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.4em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.15em; margin-top: 1.6em; }
h1 + h2 { margin-top: 0.4em; }
figure { margin: 0.8em 0 1.4em; }
figcaption { font-size: 0.85em; color: #444; margin-top: 0.3em; }
table.summary { font-size: 0.78em; width: 100%; line-height: 1.15; }
table.summary td, table.summary th { padding: 2px 5px; }
table.summary td:nth-child(4), table.summary td:nth-child(5) { white-space: nowrap; }  /* status, estimate; the claim and its rule wrap */
.badge { font-weight: bold; padding: 1px 7px; border-radius: 3px; white-space: nowrap; color: #fff; }
.badge.met { background: #1a7f37; }
.badge.not-met { background: #c62828; }
.badge.inconclusive { background: #e0a800; color: #222; }
.badge.not-measurable { background: #8a8a8a; }
nav.toc ul { margin: 0.2em 0; padding-left: 1.4em; }
"""


def _inline(text: str) -> str:
    """Escape `text`, then turn `code` and **bold** into tags (no other Markdown)."""
    parts = re.split(r"(`[^`]+`)", str(text))
    out = []
    for part in parts:
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _cell(c) -> str:
    if isinstance(c, Badge):
        return f'<td><span class="badge {_css_name(c.kind)}">{html.escape(c.text)}</span></td>'
    return f"<td>{_inline(c)}</td>"


def _css_name(kind: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


def _toc_html(entries: list[tuple[int, str, str]]) -> str:
    out, depth = [], 0
    for level, text, slug in entries:
        while depth < level:
            out.append("<ul>")
            depth += 1
        while depth > level:
            out.append("</ul>")
            depth -= 1
        out.append(f'<li><a href="#{slug}">{_inline(text)}</a></li>')
    out += ["</ul>"] * depth
    return '<nav class="toc">' + "".join(out) + "</nav>"


def _embedded(b: Image, base: Path | None) -> str:
    """The figure with its PNG inlined as a data URI; a visible note if the file cannot be read."""
    try:
        if base is None:
            raise FileNotFoundError("no report directory given")
        data = base64.b64encode((base / b.path).read_bytes()).decode("ascii")
    except OSError as e:
        return f'<div class="warning"><strong>Figure missing:</strong> {html.escape(b.path)} ({html.escape(str(e))})</div>'
    caption = f"<figcaption>{_inline(b.caption)}</figcaption>" if b.caption else ""
    width = f' width="{b.width}"' if b.width else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}"{width}>{caption}</figure>'


def to_html(doc: Document, base: Path | None = None) -> str:
    """The document as one HTML file; `base`, the directory the Image paths are relative to (their
    PNGs are embedded, so the file needs nothing beside it)."""
    slugs = {id(h): slug for h, slug in anchors(doc)}
    out = [f"<h1>{_inline(doc.title)}</h1>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            level = min(b.level + 1, 6)
            out.append(f'<h{level} id="{slugs[id(b)]}">{_inline(b.text)}</h{level}>')
        elif isinstance(b, Contents):
            out.append(_toc_html(_contents(doc, b)))
        elif isinstance(b, Badge):
            out.append(f'<p><span class="badge {_css_name(b.kind)}">{html.escape(b.text)}</span></p>')
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Callout):
            label = "Warning" if b.kind == "warning" else "Note"
            body = "<br>".join(_inline(line) for line in b.text.splitlines())
            out.append(f'<div class="{b.kind}"><strong>{label}:</strong> {body}</div>')
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            caption = f"<caption>{_inline(b.caption)}</caption>" if b.caption else ""
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in b.rows)
            css = f' class="{b.css}"' if b.css else ""
            out.append(f"<table{css}>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image):
            out.append(_embedded(b, base))
        elif isinstance(b, Code):
            out.append(f"<pre>{html.escape(b.text)}</pre>")
        else:
            raise TypeError(f"unknown block {b!r}")
    body = "\n".join(out)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(doc.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
