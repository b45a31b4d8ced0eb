"""Renderers of a RunRecord and its Diagnosis: text (tabulate), PNG (matplotlib), HTML."""

from .text import render_text as text
