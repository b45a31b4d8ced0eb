"""Reading a report back with the standard library's HTML parser, the way a test wants to see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "wbr"}


@dataclass
class ParsedPage:
    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # every start tag, in order
    sections: list[str] = field(default_factory=list)  # <section id>s in order
    body_rows: dict[str, list[list[str]]] = field(default_factory=dict)  # section id -> text of tbody cells per row
    section_text: dict[str, str] = field(default_factory=dict)
    text: str = ""
    unbalanced: list[str] = field(default_factory=list)  # mismatched or unclosed tags

    def attrs(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = ParsedPage()
        self.stack: list[str] = []
        self.section: str | None = None
        self.in_tbody = False
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.chunks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: (v or "") for k, v in attrs}
        self.page.tags.append((tag, values))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "section":
            self.section = values.get("id", "")
            self.page.sections.append(self.section)
            self.page.section_text[self.section] = ""
        elif tag == "tbody":
            self.in_tbody = True
        elif tag == "tr" and self.in_tbody:
            self.row = []
        elif tag == "td" and self.row is not None:
            self.cell = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.page.tags.append((tag, {k: (v or "") for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.page.unbalanced.append(f"</{tag}> while open: {self.stack[-3:]}")
        else:
            self.stack.pop()
        if tag == "section":
            self.section = None
        elif tag == "tbody":
            self.in_tbody = False
        elif tag == "td" and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.page.body_rows.setdefault(self.section or "", []).append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] in ("script", "style"):
            return
        self.chunks.append(data)
        if self.cell is not None:
            self.cell.append(data)
        if self.section is not None:
            self.page.section_text[self.section] += data


def parse(document: str) -> ParsedPage:
    parser = _Parser()
    parser.feed(document)
    parser.close()
    parser.page.text = "".join(parser.chunks)
    parser.page.unbalanced += [f"<{t}> never closed" for t in parser.stack]
    return parser.page
