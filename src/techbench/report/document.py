"""The document model of a report: sections of paragraphs, tables and figures, rendered as Markdown (one file
per study) or as HTML (one self-contained page, figures inlined)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    claims: list = field(default_factory=list)  # the report.claims.Verdicts its sentences state


def to_markdown(sections: list[Section], base: Path) -> str:
    out = []
    for i, s in enumerate(sections):
        out.append(("# " if i == 0 else "## ") + s.title + "\n")
        out += [p + "\n" for p in s.paragraphs]
        for t in s.tables:
            out.append("| " + " | ".join(t.headers) + " |")
            out.append("|" + "---|" * len(t.headers))
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in t.rows]
            out.append("")
        out += [f"![{f.stem}]({f.relative_to(base).as_posix()})\n" for f in s.figures]
    return "\n".join(out)


LINK = re.compile(r"\[([^\]]+)\]\(([\w.-]+?)(\.md)?\)")


def _inline_md(text: str) -> str:
    # [name](name.md) -> a link to the page's own section #name (the HTML page holds every study).
    text = LINK.sub(lambda m: f"\x00{m.group(1)}\x01{m.group(2) if m.group(3) else m.group(2)}\x02", text)
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
    return re.sub("\x00(.*?)\x01(.*?)\x02", lambda m: f'<a href="#{m.group(2)}">{m.group(1)}</a>', text)


def to_html(sections: list[Section]) -> str:
    out = []
    for i, s in enumerate(sections):
        tag = "h2" if i == 0 else "h3"
        out.append(f"<{tag}>{_inline_md(s.title)}</{tag}>")
        out += [f"<p>{_inline_md(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.headers) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline_md(c)}</td>" for c in r) + "</tr>" for r in t.rows]
            out.append("</table>")
        for f in s.figures:
            b64 = base64.b64encode(f.read_bytes()).decode()
            out.append(f'<img alt="{f.stem}" src="data:image/png;base64,{b64}">')
    return "\n".join(out)
