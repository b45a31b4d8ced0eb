"""Renderers of a RunRecord and its Diagnosis: text (tabulate), PNG (matplotlib), HTML."""
