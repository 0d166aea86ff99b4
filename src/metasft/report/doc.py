"""A report as a list of blocks, rendered both as Markdown and as self-contained HTML.

Building blocks rather than Markdown text means the HTML needs no Markdown parser and every cell
and paragraph is escaped exactly once. Inline markup in text is limited to `code` and **bold**.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field


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
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Image:
    path: str  # relative to the report directory
    alt: str


@dataclass
class Code:
    text: str


Block = Heading | Para | Callout | Bullets | Table | Image | Code


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


# ------------------------------------------------------------------------------------------ markdown
def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


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
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.path})")
        elif isinstance(b, Code):
            out.append(_fence(b.text))
        else:
            raise TypeError(f"unknown block {b!r}")
    return "\n\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ html
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
caption { caption-side: top; font-style: italic; text-align: left; padding-bottom: 0.3em; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; border: 1px solid #eee; }
.warning { background: #fff3cd; border-left: 5px solid #e0a800; padding: 0.6em 1em; }
.note { background: #eef5ff; border-left: 5px solid #5b8def; padding: 0.6em 1em; }
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


def to_html(doc: Document) -> str:
    out = [f"<h1>{_inline(doc.title)}</h1>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            level = min(b.level + 1, 6)
            out.append(f"<h{level}>{_inline(b.text)}</h{level}>")
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
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image):
            out.append(f'<p><img src="{html.escape(b.path)}" alt="{html.escape(b.alt)}"></p>')
        elif isinstance(b, Code):
            out.append(f"<pre>{html.escape(b.text)}</pre>")
        else:
            raise TypeError(f"unknown block {b!r}")
    body = "\n".join(out)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(doc.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
