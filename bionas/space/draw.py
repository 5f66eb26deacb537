"""A PNG of a genotype's normal and reduction cells, each edge coloured by its learning rule."""

from __future__ import annotations

import math
from pathlib import Path

from bionas.plots import save_figure
from bionas.rules.refs import rule_name

# Stable colours for the first-party rules; other rules take the remaining ones in order.
RULE_COLOURS = {
    "bp": "#1f77b4",
    "fa": "#ff7f0e",
    "dfa": "#8c564b",
    "usf": "#2ca02c",
    "brsf": "#d62728",
    "frsf": "#9467bd",
    "hebbian": "#e377c2",
    "pc": "#17becf",
}
SPARE_COLOURS = ["#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94"]
PARAMETER_FREE_COLOUR = "#999999"


def rule_colours(names: list[str]) -> dict[str, str]:
    """A colour for each rule name: the fixed one, or the next spare one."""
    spare = iter(SPARE_COLOURS * (1 + len(names) // len(SPARE_COLOURS)))
    return {name: RULE_COLOURS.get(name) or next(spare) for name in names}


def _positions(nodes: int) -> dict[int, tuple[float, float]]:
    """Inputs on the left, intermediate nodes on a zigzag left to right, the output (key -1) on the right."""
    pos = {0: (0.0, 1.6), 1: (0.0, -1.6)}
    for node in range(nodes):
        pos[2 + node] = (2.4 * (node + 1), 0.9 if node % 2 == 0 else -0.9)
    pos[-1] = (2.4 * (nodes + 1), 0.0)
    return pos


def node_labels(nodes: int) -> dict[int, str]:
    """The label of each node of a cell drawing, numbered as genotype.json, report.md and `str(genotype)`
    number them: the inputs c_{k-2} and c_{k-1} are nodes 0 and 1, intermediate nodes 2 .. nodes + 1;
    the output (key -1) is c_k."""
    labels = {0: "$c_{k-2}$ (0)", 1: "$c_{k-1}$ (1)", -1: "$c_{k}$"}
    return {**labels, **{2 + node: str(2 + node) for node in range(nodes)}}


def _draw_cell(ax, edges, concat, title: str, colours: dict[str, str]) -> None:
    from matplotlib.patches import FancyArrowPatch

    pos = _positions(len(edges) // 2)
    labels = node_labels(len(edges) // 2)
    for node, (x, y) in pos.items():
        face = "#dfe8f5" if node in (0, 1) else "#f5e6c8" if node == -1 else "#eeeeee"
        ax.text(x, y, labels[node], ha="center", va="center", fontsize=10, zorder=3,
                bbox={"boxstyle": "round,pad=0.35", "fc": face, "ec": "#444444"})  # fmt: skip
    for node in concat:
        ax.add_patch(FancyArrowPatch(pos[node], pos[-1], arrowstyle="-|>", mutation_scale=10, lw=0.8,
                                     color="#bbbbbb", linestyle="--", shrinkA=12, shrinkB=16, zorder=0))  # fmt: skip
    for i, edge in enumerate(edges):
        colour = PARAMETER_FREE_COLOUR if edge.rule is None else colours[rule_name(edge.rule)]
        bend = 0.2 if i % 2 else -0.2  # the two edges of a node bend apart
        (x0, y0), (x1, y1) = pos[edge.source], pos[2 + i // 2]
        arrow = FancyArrowPatch((x0, y0), (x1, y1), connectionstyle=f"arc3,rad={bend}", arrowstyle="-|>",
                                mutation_scale=12, lw=1.8, color=colour, shrinkA=14, shrinkB=14, zorder=1)  # fmt: skip
        ax.add_patch(arrow)
        # the midpoint of matplotlib's arc3 curve (a quadratic Bezier), with the label along the edge
        dx, dy = x1 - x0, y1 - y0
        lx, ly = (x0 + x1) / 2 + bend * dy / 2, (y0 + y1) / 2 - bend * dx / 2
        angle = math.degrees(math.atan2(dy, dx))
        angle = angle - 180 if angle > 90 else angle + 180 if angle < -90 else angle
        ax.text(lx, ly, edge.op, fontsize=7, ha="center", va="center", color=colour, rotation=angle,
                rotation_mode="anchor", zorder=2,
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85})  # fmt: skip
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-2.4, 2.4)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.axis("off")


def draw_genotype(genotype, path: str | Path) -> Path:
    """Write a PNG of both cells of `genotype`, with a legend of the rules.

    Drawn on a bare matplotlib Figure (Agg canvas), so pyplot's global state and backend are untouched.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    used = genotype.rules_used()
    fixed = [rule_name(ref) for ref in genotype.fixed_rules.values() if ref is not None]
    colours = rule_colours(list(dict.fromkeys(used + fixed)))
    nodes = max(genotype.nodes("normal"), genotype.nodes("reduce"))
    fig = Figure(figsize=(2.0 + 1.9 * nodes, 7.0))
    axes = fig.subplots(2, 1)
    for ax, cell_type in zip(axes, ("normal", "reduce")):
        edges, concat = genotype.cell(cell_type)
        _draw_cell(ax, edges, concat, f"{cell_type} cell", colours)
    handles = [Line2D([], [], color=colours[name], lw=2.5, label=name) for name in used]
    handles.append(Line2D([], [], color=PARAMETER_FREE_COLOUR, lw=2.5, label="parameter-free"))
    fig.legend(handles=handles, loc="upper right", title="rule", fontsize=8)
    fixed_text = ", ".join(f"{layer}: {rule_name(ref) or 'plain'}" for layer, ref in genotype.fixed_rules.items())
    fig.text(0.5, 0.01, f"fixed layers - {fixed_text}", ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 0.88, 1))
    return save_figure(fig, path, dpi=120)
