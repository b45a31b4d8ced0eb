"""Renderers of a RunRecord and its Diagnosis, and of a sweep: text (tabulate), PNG (matplotlib), HTML."""

from .sweep_table import render_table as sweep_table
from .text import render_text as text

__all__ = ["sweep_table", "text"]
