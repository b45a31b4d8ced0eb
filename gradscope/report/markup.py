"""Building blocks of a self-contained HTML page: escaped markup, figures, tables, sections.

Text is escaped by default: a plain `str` anywhere in a block is escaped when rendered, and
only `Markup` (built here from escaped parts) is inserted as is. `render_page` fills the
templates in gradscope/report/templates/ (read with importlib.resources) with inline CSS and
JavaScript and figures as data: URIs, so the page loads nothing from the network.

The run report (`gradscope.report.html`) and the depth-sweep page both build `Section`s and
call `render_page`, so they share one look.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from string import Template
from typing import Iterable, Sequence, Union

from ..number_format import HTML, format_number


class Markup(str):
    """A string of HTML that is safe to insert as is (made only from escaped parts)."""


Content = Union[str, Markup]


def escape(value: object) -> Markup:
    """Escape text for HTML content and attribute values; `Markup` passes through unchanged."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Content], separator: str = "\n") -> Markup:
    return Markup(escape(separator).join(escape(p) for p in parts))


def element(name: str, content: Content = "", **attributes: object) -> Markup:
    """`<name attr="...">content</name>`; attribute values and plain-text content are escaped.

    A trailing underscore is dropped from attribute names (`class_` -> `class`); None skips one.
    """
    attrs = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{escape(value)}"'
        for key, value in attributes.items()
        if value is not None
    )
    return Markup(f"<{name}{attrs}>{escape(content)}</{name}>")


def paragraphs(text: Content) -> Markup:
    """Plain text becomes escaped paragraphs split on blank lines (`code` in backticks kept); Markup passes through."""
    if isinstance(text, Markup):
        return text
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    return join(element("p", inline_code(b)) for b in blocks)


def inline_code(text: str) -> Markup:
    """Escape `text`, setting `backticked` spans in <code> as findings write module names."""
    parts = text.split("`")
    if len(parts) < 3 or len(parts) % 2 == 0:  # no pair, or an unmatched backtick: plain text
        return escape(text)
    return Markup("".join(element("code", p) if i % 2 else escape(p) for i, p in enumerate(parts)))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def anchor_for(text: str) -> str:
    """An id usable in #links: lowercase letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "section"


@dataclass
class Figure:
    """A PNG shown inline as a data: URI."""

    png: bytes
    alt: str  # what the figure shows, for screen readers and when images are off
    caption: str = ""

    def to_html(self) -> Markup:
        return Markup(
            _template("figure.html").substitute(
                src=escape(data_uri(self.png)),
                alt=escape(self.alt),
                caption=element("figcaption", self.caption) if self.caption else "",
            )
        )


@dataclass(frozen=True)
class ShownNumber:
    """A number sorted by `value` but shown as `text`, e.g. a ratio that underflowed as "< 1e-19"."""

    value: float
    text: str


@dataclass(frozen=True)
class Absent:
    """No value, and why: `text` in the cell (sorted last, like None), `why` as its tooltip."""

    text: str
    why: str


Cell = Union[None, bool, int, float, str, Markup, ShownNumber, Absent]


@dataclass
class Table:
    """A table whose numeric columns the page's script can sort (the page reads fine without it).

    Cells may be numbers (formatted, sorted numerically), None (a dash, sorted last), `Absent` (a word
    saying why there is no value, its reason as a tooltip, sorted last), plain text (escaped) or Markup
    (inserted as is, sorted by its text).
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    caption: str = ""
    column_notes: Sequence[str] = ()  # a tooltip per column: what it means
    row_classes: Sequence[str] = ()  # a CSS class per row, e.g. "flagged"
    sortable: bool = True
    css_class: str = ""  # e.g. "kv" for a two-column item/value table

    def to_html(self) -> Markup:
        numeric = [self._is_numeric(j) for j in range(len(self.columns))]
        header = join(
            element(
                "th",
                name,
                scope="col",
                title=(self.column_notes[j] if j < len(self.column_notes) and self.column_notes[j] else None),
                data_type="num" if numeric[j] else "text",
            )
            for j, name in enumerate(self.columns)
        )
        body_rows = []
        for i, row in enumerate(self.rows):
            cells = join(self._cell(value, numeric[j]) for j, value in enumerate(row))
            row_class = self.row_classes[i] if i < len(self.row_classes) and self.row_classes[i] else None
            body_rows.append(element("tr", cells, class_=row_class))
        table = element(
            "table",
            join(
                [
                    element("caption", self.caption) if self.caption else Markup(""),
                    element("thead", element("tr", header)),
                    element("tbody", join(body_rows)),
                ]
            ),
            class_=" ".join(c for c in ("data", "sortable" if self.sortable else "", self.css_class) if c),
        )
        return element("div", table, class_="table-wrap")

    def _is_numeric(self, column: int) -> bool:
        values = [row[column] for row in self.rows if column < len(row) and not isinstance(row[column], (type(None), Absent))]
        return bool(values) and all(
            isinstance(v, (int, float, ShownNumber)) and not isinstance(v, bool) for v in values)

    @staticmethod
    def _cell(value: Cell, numeric: bool) -> Markup:
        if isinstance(value, Absent):
            css = "num none" if numeric else "none"
            return element("td", value.text, class_=css, data_sort="" if numeric else None, title=value.why)
        if isinstance(value, ShownNumber):
            return element("td", value.text, class_="num", data_sort=repr(float(value.value)))
        if numeric:
            key = "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))
            return element("td", format_number(value, HTML), class_="num", data_sort=key)
        if value is None:
            return element("td", "\u2014", class_="none")
        if isinstance(value, (int, float, bool)):
            return element("td", format_number(value, HTML))
        return element("td", value)


@dataclass
class Section:
    """One headed part of a page: optional body text or markup, then tables, then figures."""

    heading: str
    body: Content = ""  # plain text (escaped, blank lines start paragraphs) or Markup
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    anchor: str = ""  # id for #links; made from the heading when empty
    css_class: str = ""

    @property
    def id(self) -> str:
        return self.anchor or anchor_for(self.heading)

    def to_html(self) -> Markup:
        parts = [paragraphs(self.body)]
        parts += [t.to_html() for t in self.tables]
        parts += [f.to_html() for f in self.figures]
        return Markup(
            _template("section.html").substitute(
                id=escape(self.id),
                css_class=escape(" ".join(["block", self.css_class]).strip()),
                heading=escape(self.heading),
                body=join(p for p in parts if p),
            )
        )


def render_page(
    title: str,
    sections: Sequence[Section],
    meta: Sequence[tuple[str, Content]] = (),
    footer: Content = "Made by gradscope. This page is self-contained: it loads nothing from the network.",
) -> str:
    """A complete HTML document: `title`, a line of `meta` (label, value) pairs, a table of contents, the sections."""
    ids = [s.id for s in sections]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Section anchors must be unique, got {ids}")
    nav = join(element("a", s.heading, href=f"#{s.id}") for s in sections)
    meta_html = join(
        element("span", join([element("b", label), escape(value)], " "), class_="meta-item") for label, value in meta
    )
    return _template("page.html").substitute(
        title=escape(title),
        style=_resource("style.css"),
        script=_resource("sort.js"),
        meta=element("p", meta_html, class_="meta") if meta else "",
        nav=element("nav", nav, aria_label="Sections") if sections else "",
        sections=join(s.to_html() for s in sections),
        footer=escape(footer),
    )


@lru_cache(maxsize=None)
def _resource(name: str) -> str:
    return resources.files("gradscope.report").joinpath("templates", name).read_text(encoding="utf-8")


def _template(name: str) -> Template:
    return Template(_resource(name))
