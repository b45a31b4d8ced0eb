"""Two runs side by side: per-layer statistics and which findings were fixed or introduced.

The typical pair is "before and after a fix" (sigmoid -> ReLU + BatchNorm), where the layer
lists differ: adding BatchNorm to an `nn.Sequential` shifts every index after it. Layers are
therefore aligned by their type sequence (difflib), so `Linear` rows face `Linear` rows and a
layer present in only one run gets a row of its own, instead of pairing `net.2` (Sigmoid) with
`net.2` (BatchNorm1d) because they share a name.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

from tabulate import tabulate

from .decay import first_last_ratio
from .diagnose import Diagnosis, Finding
from .diagnose.coverage import LEGEND, Coverage, Gap, coverage, legend_lines, legend_text
from .number_format import compact, percent
from .record import ModuleInfo, RunRecord

# (statistic, column heading, format): the four numbers that show gradient flow at a glance.
COMPARED_STATS: tuple[tuple[str, str, Callable[[Optional[float]], str]], ...] = (
    ("grad_rms", "grad RMS", compact),
    ("backprop_norm", "backprop signal", compact),
    ("act_dead_frac", "dead", percent),
    ("act_saturation", "saturation", percent),
)


@dataclass
class LayerRow:
    a: Optional[ModuleInfo]
    b: Optional[ModuleInfo]
    values: dict[str, tuple[Optional[float], Optional[float]]]  # stat -> (value in A, value in B), last recorded
    # stat -> why A's and B's value is missing (coverage.Gap, None where measured or no such layer)
    gaps: dict[str, tuple[Optional[Gap], Optional[Gap]]] = field(default_factory=dict)


@dataclass
class Comparison:
    label_a: str
    label_b: str
    rows: list[LayerRow]
    signal_ratios: tuple[Optional[float], Optional[float]] = (None, None)  # first/last layer backprop, A and B
    fixed: list[Finding] = field(default_factory=list)  # in A, not in B (by code)
    introduced: list[Finding] = field(default_factory=list)  # in B, not in A
    remaining: list[Finding] = field(default_factory=list)  # in both (B's finding)


def compare_runs(
    a: RunRecord, b: RunRecord, diagnosis_a: Diagnosis, diagnosis_b: Diagnosis, label_a: str = "A", label_b: str = "B"
) -> Comparison:
    cover_a, cover_b = coverage(a), coverage(b)
    rows = []
    for ma, mb in align_layers(a.modules, b.modules):
        values = {stat: (_value(a, ma, stat), _value(b, mb, stat)) for stat, _, _ in COMPARED_STATS}
        gaps = {
            stat: (_gap(cover_a, ma, stat, values[stat][0]), _gap(cover_b, mb, stat, values[stat][1]))
            for stat, _, _ in COMPARED_STATS
        }
        rows.append(LayerRow(ma, mb, values, gaps))
    codes_a, codes_b = set(diagnosis_a.codes()), set(diagnosis_b.codes())
    return Comparison(
        label_a=label_a,
        label_b=label_b,
        rows=rows,
        signal_ratios=(signal_ratio(a), signal_ratio(b)),
        fixed=_first_per_code(f for f in diagnosis_a if f.code not in codes_b),
        introduced=_first_per_code(f for f in diagnosis_b if f.code not in codes_a),
        remaining=_first_per_code(f for f in diagnosis_b if f.code in codes_a),
    )


def align_layers(
    a: list[ModuleInfo], b: list[ModuleInfo]
) -> list[tuple[Optional[ModuleInfo], Optional[ModuleInfo]]]:
    """Pairs in forward order; identical architectures pair by name, others by type sequence."""
    if [m.name for m in a] == [m.name for m in b] and [m.type for m in a] == [m.type for m in b]:
        return list(zip(a, b))
    pairs: list[tuple[Optional[ModuleInfo], Optional[ModuleInfo]]] = []
    matcher = difflib.SequenceMatcher(a=[_role(m) for m in a], b=[_role(m) for m in b], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pairs.extend(zip(a[i1:i2], b[j1:j2]))
        else:  # different types never share a row
            pairs.extend((m, None) for m in a[i1:i2])
            pairs.extend((None, m) for m in b[j1:j2])
    return pairs


def _role(module: ModuleInfo) -> str:
    """What a layer does in the stack: activations are interchangeable (Sigmoid -> ReLU is the usual fix)."""
    return "activation" if module.activation else module.type


def signal_ratio(record: RunRecord) -> Optional[float]:
    """Backprop signal at the first layer over that at the last (forward order): 1 is no decay."""
    values = [record.last("backprop_norm", m.name) for m in record.modules if m.name in record.layer_stats]
    values = [v for v in values if v is not None and math.isfinite(v)]
    return first_last_ratio(values) if len(values) >= 2 else None


def render_comparison(comparison: Comparison) -> str:
    """The comparison as plain text (a table, then the finding changes), readable at 100 columns."""
    a, b = comparison.label_a, comparison.label_b
    headers = [f"layer in {a}", f"layer in {b}"] + [f"{title}\n{a} -> {b}" for _, title, _ in COMPARED_STATS]
    table, shown = [], []
    for row in comparison.rows:
        cells = [_layer_cell(row.a), _layer_cell(row.b)]
        for stat, _, spell in COMPARED_STATS:
            (va, vb), gaps = row.values[stat], row.gaps.get(stat, (None, None))
            words = [spell(v) if gap is None else gap.label for v, gap in zip((va, vb), gaps)]
            shown += [gap for gap in gaps if gap is not None]
            cells.append(f"{words[0]} -> {words[1]}")
        table.append(cells)
    lines = [
        f"Comparing {a} and {b} (last recorded step of each; a word says why a value was not measured, "
        "'-' = no such layer in that run)",
        "",
        tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True),
    ]
    # each word's general meaning: the two runs' cells may be empty for different reasons
    lines += legend_text([(label, LEGEND[label]) for label, _ in legend_lines(shown)])
    lines += [
        "",
        "Backprop signal at the first layer / at the last layer (1 = no decay): "
        f"{compact(comparison.signal_ratios[0])} in {a} -> {compact(comparison.signal_ratios[1])} in {b}",
        "",
    ]
    lines += _finding_section(f"Fixed (found in {a}, not in {b})", comparison.fixed)
    lines += _finding_section(f"Introduced (found in {b}, not in {a})", comparison.introduced)
    lines += _finding_section("Still present", comparison.remaining)
    return "\n".join(lines).rstrip() + "\n"


def _finding_section(title: str, findings: list[Finding]) -> list[str]:
    if not findings:
        return [f"{title}: none", ""]
    lines = [f"{title}:"]
    for finding in findings:
        lines.append(f"  [{finding.severity}] {finding.code}: {finding.title}")
    return lines + [""]


def _first_per_code(findings) -> list[Finding]:
    seen: set[str] = set()
    kept = []
    for finding in findings:
        if finding.code not in seen:
            seen.add(finding.code)
            kept.append(finding)
    return kept


def _value(record: RunRecord, module: Optional[ModuleInfo], stat: str) -> Optional[float]:
    if module is None or module.name not in record.layer_stats:
        return None
    return record.last(stat, module.name)


def _gap(cover: Coverage, module: Optional[ModuleInfo], stat: str, value: Optional[float]) -> Optional[Gap]:
    return cover.gap(module, stat) if module is not None and value is None else None


def _layer_cell(module: Optional[ModuleInfo]) -> str:
    if module is None:
        return "-"
    name = module.name or "(root)"
    if len(name) > 24:
        name = "..." + name[-21:]
    return f"{name} {module.type}"
