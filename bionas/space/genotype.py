"""Genotype: the cells a search found, as plain JSON; derivation from mixing weights by the DARTS rule.

JSON form (nodes 0 and 1 are the cell inputs, node k >= 2 intermediate node
k-2; intermediate node i owns edges 2i and 2i+1):

    {"normal": [{"op": "sep_conv_3x3", "rule": "usf", "source": 0}, ...],
     "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [2, 3, 4, 5],
     "fixed_rules": {"stem": "bp", "preprocess": "bp", "classifier": "bp", "auxiliary": "bp"}}

A rule is a name, or {"name": ..., "options": {...}} when its options differ
from the defaults; a parameter-free op has rule null, and so has a fixed layer
that stays plain (backprop without a rule plugin). Fixed rules a genotype leaves
out are those of the default space (bp). An op with weights at one stride only
(skip_connect: the identity at stride 1, a FactorizedReduce at stride 2) has
rule null where it has none; a rule given there is read as null, with a note
(`Genotype.notes`) that runs print as a warning, so the paper's published
genotype and those of earlier versions, which name rules on identities, still
load.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bionas.errors import BionasError, PluginError, SpecError, format_pydantic_errors
from bionas.registry import Registry, get_registry
from bionas.rundir import atomic_write_text
from bionas.rules.refs import RuleRef, rule_name, rule_options
from bionas.space.candidates import FIXED_LAYERS, Candidate
from bionas.space.draw import draw_genotype
from bionas.spec import default_fixed_rule

CELL_TYPES = ("normal", "reduce")


@dataclass(frozen=True)
class Edge:
    """One kept edge of a cell: its op, the op's rule (None if parameter-free), and its source node."""

    op: str
    rule: RuleRef | None
    source: int

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "rule": self.rule, "source": self.source}

    def __str__(self) -> str:
        if self.rule is None:
            return f"{self.op}({self.source})"
        return f"{self.op}/{_rule_text(self.rule)}({self.source})"


def edge_stride(cell_type: str, source: int) -> int:
    """The stride of an edge (DARTS): 2 from a reduction cell's inputs (nodes 0 and 1), else 1."""
    return 2 if cell_type == "reduce" and source < 2 else 1


def default_fixed_rules() -> dict[str, RuleRef | None]:
    """Every fixed layer on the default space's fixed rule (bp; None, plain layers, when no rule is bp)."""
    return dict.fromkeys(FIXED_LAYERS, default_fixed_rule())


@dataclass
class Genotype:
    """Both cells of a derived network and the rules of its fixed layers (stem, preprocess, classifier, auxiliary)."""

    normal: list[Edge]
    normal_concat: list[int]
    reduce: list[Edge]
    reduce_concat: list[int]
    fixed_rules: dict[str, RuleRef | None] = field(default_factory=default_fixed_rules)
    # What reading the genotype changed (a rule on an edge without weights, read as null): a run
    # prints each as a warning. Not part of the genotype: not compared, not written.
    notes: list[str] = field(default_factory=list, compare=False, repr=False)

    def cell(self, cell_type: str) -> tuple[list[Edge], list[int]]:
        """(edges, concat) of "normal" or "reduce"."""
        return getattr(self, cell_type), getattr(self, f"{cell_type}_concat")

    def nodes(self, cell_type: str = "normal") -> int:
        return len(getattr(self, cell_type)) // 2

    # -- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for cell_type in CELL_TYPES:
            edges, concat = self.cell(cell_type)
            data[cell_type] = [edge.to_dict() for edge in edges]
            data[f"{cell_type}_concat"] = list(concat)
        data["fixed_rules"] = {layer: self.fixed_rules[layer] for layer in FIXED_LAYERS}
        return json.loads(json.dumps(data))  # plain JSON types only, and a copy

    @classmethod
    def from_dict(cls, data: Any, check_plugins: bool = True, source: str | None = None) -> Genotype:
        """Validate and build; `check_plugins` also checks op and rule names against the registry."""
        errors = _structure_errors(data)
        if errors:
            raise SpecError(errors, source or "genotype")
        genotype = cls(
            normal=[Edge(e["op"], e.get("rule"), e["source"]) for e in data["normal"]],
            normal_concat=list(data["normal_concat"]),
            reduce=[Edge(e["op"], e.get("rule"), e["source"]) for e in data["reduce"]],
            reduce_concat=list(data["reduce_concat"]),
            fixed_rules=_fixed_rules(data.get("fixed_rules", {})),
        )
        if check_plugins:
            genotype.validate(source=source)
        return genotype

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str, check_plugins: bool = True, source: str | None = None) -> Genotype:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError([f"not valid JSON: {exc}"], source or "genotype") from None
        return cls.from_dict(data, check_plugins, source)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path, check_plugins: bool = True) -> Genotype:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BionasError(f"cannot read genotype {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise SpecError([f"not UTF-8 text (byte {exc.start}): save the genotype as UTF-8 JSON"], str(path)) from None
        return cls.from_json(text, check_plugins, source=str(path))

    # -- checks ----------------------------------------------------------------------------------

    def validate(self, registry: Registry | None = None, source: str | None = None) -> None:
        """Every op and rule is registered, rule options are valid, rules sit exactly on edges with weights.

        A rule on an edge whose op has weights at other strides but not at this one (skip_connect at
        stride 1) is set to null here, with a note in `notes`; on an op without weights at any stride
        (pooling, none) it is an error."""
        registry = registry or get_registry()
        errors = []
        for cell_type in CELL_TYPES:
            edges = getattr(self, cell_type)
            for i, edge in enumerate(edges):
                path = f"{cell_type}[{i}]"
                try:
                    op = registry.get_class("op", edge.op)
                except PluginError as exc:
                    errors.append(f"{path}.op: {exc}")
                    continue
                if edge.rule is not None and (rule_errors := _rule_errors(registry, edge.rule, f"{path}.rule")):
                    errors += rule_errors  # a misspelt rule is reported as such, wherever it sits
                    continue
                stride = edge_stride(cell_type, edge.source)
                weights = op.has_weights(stride)
                if weights and edge.rule is None:
                    errors.append(f"{path}.rule: op '{edge.op}' has parameters: give the rule they learn by")
                elif not op.parametric and edge.rule is not None:
                    errors.append(f"{path}.rule: op '{edge.op}' is parameter-free, so rule '{_rule_text(edge.rule)}' "
                                  "cannot apply: its rule must be null")
                elif not weights and edge.rule is not None:
                    self.notes.append(f"{path}.rule: {edge.op} at stride {stride} ({_where(cell_type)}) has no "
                                      f"weights, so rule '{_rule_text(edge.rule)}' cannot apply: read as null")
                    edges[i] = Edge(edge.op, None, edge.source)
        for layer in FIXED_LAYERS:
            if self.fixed_rules[layer] is not None:  # None: plain layers
                errors += _rule_errors(registry, self.fixed_rules[layer], f"fixed_rules.{layer}")
        if errors:
            raise SpecError(errors, source or "genotype")

    def rules_used(self) -> list[str]:
        """Rule names of the searched edges, in first-use order."""
        names = [rule_name(e.rule) for c in CELL_TYPES for e in getattr(self, c) if e.rule is not None]
        return list(dict.fromkeys(names))

    def rule_counts(self) -> dict[str, int]:
        """Kept edges per rule over both cells, parameter-free ops as "free"; most used first."""
        counts = Counter("free" if e.rule is None else rule_name(e.rule) for c in CELL_TYPES for e in getattr(self, c))
        return dict(counts.most_common())

    # -- display ---------------------------------------------------------------------------------

    def __str__(self) -> str:
        lines = []
        for cell_type in CELL_TYPES:
            edges, concat = self.cell(cell_type)
            lines.append(f"{cell_type} cell (output: concat of nodes {', '.join(map(str, concat))})")
            for node in range(len(edges) // 2):
                a, b = edges[2 * node], edges[2 * node + 1]
                lines.append(f"  node {node + 2} = {a} + {b}")
        fixed = ", ".join(f"{layer} {_rule_text(self.fixed_rules[layer])}" for layer in FIXED_LAYERS)
        lines.append(f"fixed layers: {fixed}")
        return "\n".join(lines)

    def draw(self, path: str | Path) -> Path:
        """A PNG of both cells, each edge coloured by its rule, with a legend."""
        return draw_genotype(self, path)


def _where(cell_type: str) -> str:
    return "every edge of a normal cell" if cell_type == "normal" else "an edge of a reduction cell from node 2 on"


def _fixed_rules(given: dict[str, RuleRef | None]) -> dict[str, RuleRef | None]:
    """The fixed rules of a genotype's JSON, those it leaves out from the default space."""
    missing = [layer for layer in FIXED_LAYERS if layer not in given]
    return {**(dict.fromkeys(missing, default_fixed_rule()) if missing else {}), **given}


def _rule_text(ref: RuleRef | None) -> str:
    if ref is None:
        return "plain"
    options = rule_options(ref)
    return rule_name(ref) + (f"{options}" if options else "")


def _structure_errors(data: Any) -> list[str]:
    """What keeps `data` from being a genotype's JSON form; each message names its path."""
    if not isinstance(data, dict):
        return [f"a genotype is a JSON object, got {type(data).__name__}"]
    required = {"normal", "normal_concat", "reduce", "reduce_concat"}
    errors = [f"{key}: missing" for key in sorted(required - set(data))]
    errors += [f"{key}: unknown field (not allowed here)" for key in sorted(set(data) - required - {"fixed_rules"})]
    for cell_type in CELL_TYPES:
        edges, concat = data.get(cell_type), data.get(f"{cell_type}_concat")
        if edges is None:
            continue
        if not isinstance(edges, list) or not edges or len(edges) % 2:
            errors.append(f"{cell_type}: a non-empty list with two edges per intermediate node")
            continue
        for i, edge in enumerate(edges):
            errors += _edge_errors(edge, f"{cell_type}[{i}]", inputs=2 + i // 2)
        nodes = 2 + len(edges) // 2
        if concat is not None and (
            not isinstance(concat, list)
            or not concat
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < nodes for n in concat)
            or len(set(concat)) != len(concat)
        ):
            errors.append(f"{cell_type}_concat: distinct node numbers in 0..{nodes - 1}, got {concat!r}")
        elif concat is not None:
            errors += _unused_node_errors(edges, concat, cell_type)
    fixed = data.get("fixed_rules", {})
    if not isinstance(fixed, dict):
        errors.append("fixed_rules: an object of rules by layer")
    else:
        known = ", ".join(FIXED_LAYERS)
        errors += [f"fixed_rules.{k}: unknown layer (known: {known})" for k in fixed if k not in FIXED_LAYERS]
        errors += [f"fixed_rules.{k}: a rule name, {{name, options}} or null (plain layers)"
                   for k, v in fixed.items() if v is not None and not _is_rule_ref(v)]
    return errors


def _unused_node_errors(edges: list[Any], concat: list[int], cell_type: str) -> list[str]:
    """An intermediate node neither concatenated nor read by a later edge computes nothing the cell
    outputs: its edges' weights would never learn, yet count as parameters."""
    read = {edge.get("source") for edge in edges if isinstance(edge, dict)}
    unused = [node for node in range(2, 2 + len(edges) // 2) if node not in concat and node not in read]
    return [f"{cell_type}_concat: node {node} is neither in the concat nor the source of a later edge, so nothing "
            f"the cell outputs depends on it; add it to {cell_type}_concat" for node in unused]


def _edge_errors(edge: Any, path: str, inputs: int) -> list[str]:
    if not isinstance(edge, dict):
        return [f"{path}: an object {{op, rule, source}}, got {edge!r}"]
    errors = [f"{path}.{k}: unknown field (not allowed here)" for k in edge if k not in ("op", "rule", "source")]
    if not isinstance(edge.get("op"), str):
        errors.append(f"{path}.op: an op name")
    if edge.get("rule") is not None and not _is_rule_ref(edge["rule"]):
        errors.append(f"{path}.rule: a rule name, {{name, options}} or null")
    source = edge.get("source")
    if not isinstance(source, int) or isinstance(source, bool) or not 0 <= source < inputs:
        errors.append(f"{path}.source: a node number in 0..{inputs - 1}, got {source!r}")
    return errors


def _is_rule_ref(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return (
        isinstance(value, dict)
        and isinstance(value.get("name"), str)
        and set(value) <= {"name", "options"}
        and isinstance(value.get("options", {}), dict)
    )


def _rule_errors(registry, ref: RuleRef, path: str) -> list[str]:
    try:
        cls = registry.get_class("rule", rule_name(ref))
    except PluginError as exc:
        return [f"{path}: {exc}"]
    try:
        cls.Options.model_validate(rule_options(ref))
    except ValidationError as err:
        return format_pydantic_errors(err, prefix=f"{path}.options")
    return []


# -- derivation (the DARTS rule) -----------------------------------------------------------------


def derive_cell(
    weights: Sequence[Sequence[float]],
    candidates: Sequence[Candidate],
    zero: Sequence[bool],
    nodes: int,
    edge_weights: Sequence[float] | None = None,
) -> list[Edge]:
    """Keep, per intermediate node, the 2 incoming edges with the largest non-zero-op weight,
    each with its best non-zero-op candidate (DARTS model_search.py genotype()).

    `weights`: one row of mixing weights per edge (softmax of the alphas);
    `zero[k]`: candidate k is the zero op; `edge_weights`: PC-DARTS edge
    normalization, which scales each row before the edges are ranked. Ties go
    to the lower index (stable sort and strict comparison, as in DARTS).
    """
    rows = [[float(w) for w in row] for row in weights]
    if edge_weights is not None:
        rows = [[w * float(edge_weights[e]) for w in row] for e, row in enumerate(rows)]
    allowed = [k for k in range(len(candidates)) if not zero[k]]
    if not allowed:
        raise BionasError("cannot derive a genotype: every candidate is a zero op")
    edges, start = [], 0
    for node in range(nodes):
        inputs = 2 + node
        node_rows = rows[start : start + inputs]
        ranked = sorted(range(inputs), key=lambda j: -max(node_rows[j][k] for k in allowed))
        for j in ranked[:2]:
            best = allowed[0]
            for k in allowed[1:]:
                if node_rows[j][k] > node_rows[j][best]:
                    best = k
            edges.append(Edge(candidates[best].op, candidates[best].rule_ref, j))
        start += inputs
    return edges


def derive_genotype(space, weights: Mapping[str, Any], edge_weights: Mapping[str, Any] | None = None) -> Genotype:
    """Both cells of a SearchSpace's genotype by `derive_cell`, from mixing weights by cell type
    (tensors or nested lists, one row per edge) and optional edge weights; concat: every
    intermediate node (DARTS multiplier = steps); fixed rules from the space."""
    zero = [space.is_zero(i) for i in range(space.num_candidates)]
    nodes = space.spec.nodes
    cells = {}
    for kind in CELL_TYPES:
        scale = None if edge_weights is None else _as_list(edge_weights[kind])
        cells[kind] = derive_cell(_as_list(weights[kind]), space.candidates, zero, nodes, scale)
    concat = list(range(2, 2 + nodes))
    for kind, edges in cells.items():
        # The rule variants of an op are one candidate each, also where the op has no weights (skip_connect
        # at stride 1, the identity); the kept edge is the winning candidate's op, without a rule there.
        cells[kind] = [edge if space.ops[edge.op].has_weights(edge_stride(kind, edge.source))
                       else Edge(edge.op, None, edge.source) for edge in edges]
    return Genotype(cells["normal"], concat, cells["reduce"], list(concat), dict(space.fixed_rules))


def _as_list(value: Any) -> Any:
    return value.detach().cpu().tolist() if hasattr(value, "detach") else value


# -- published genotypes (REFERENCES.md) ---------------------------------------------------------


def _edges(cell_type: str, *items: tuple) -> list[Edge]:
    """Edges from (op, rule, source), or (op, source): then bp; no rule for a parameter-free op, nor for
    skip_connect at stride 1 (the identity: what Genotype.validate reads a rule there as).

    The published genotypes name their ops and rules as published; they need the first-party
    plugins to be built."""
    edges = []
    for item in items:
        op, rule, source = item if len(item) == 3 else (item[0], "bp", item[1])
        no_weights = op in _PARAMETER_FREE or (op == "skip_connect" and edge_stride(cell_type, source) == 1)
        edges.append(Edge(op, None if no_weights else rule, source))
    return edges


_PARAMETER_FREE = {"none", "max_pool_3x3", "avg_pool_3x3"}

# DARTS (second order), quark0/darts cnn/genotypes.py DARTS_V2; every edge with weights on bp.
DARTS_V2 = Genotype(
    normal=_edges(
        "normal",
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2),
    ),
    normal_concat=[2, 3, 4, 5],
    reduce=_edges(
        "reduce",
        ("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1),
    ),
    reduce_concat=[2, 3, 4, 5],
    fixed_rules=dict.fromkeys(FIXED_LAYERS, "bp"),
)  # fmt: skip

# The published BioNAS-DARTS network (Hamzaoui & Baghdadi 2025), its rules as published; the three
# frsf skip_connects of the normal cell are identities, so their rule is null. Its code kept every
# fixed layer on backprop, so the fixed rules are bp.
BIONAS_DARTS = Genotype(
    normal=_edges(
        "normal",
        ("skip_connect", "frsf", 0), ("skip_connect", "frsf", 1), ("sep_conv_3x3", "frsf", 1),
        ("sep_conv_3x3", "usf", 2), ("sep_conv_3x3", "usf", 0), ("skip_connect", "frsf", 1),
        ("sep_conv_3x3", "frsf", 1), ("max_pool_3x3", 0),
    ),
    normal_concat=[2, 3, 4, 5],
    reduce=_edges(
        "reduce",
        ("max_pool_3x3", 0), ("skip_connect", "usf", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("dil_conv_5x5", "usf", 3),
    ),
    reduce_concat=[2, 3, 4, 5],
    fixed_rules=dict.fromkeys(FIXED_LAYERS, "bp"),
)  # fmt: skip


def spec_genotype(spec, label: str | None = None) -> Genotype | None:
    """The genotype a spec retrains (a file, or inline), read and checked against the installed ops and
    rules as the retrain will; None when the spec names none. Raises SpecError under the field `genotype`;
    its `notes` (what reading it normalised) name the field too, for the caller to print as warnings.

    Not part of `load_spec`: the spec layer sits below the models. `bionas validate`, studies and every run
    (when it starts, before any work) call it; a spec recorded in a run directory is never read with it
    (its file names are not ours to read)."""
    if spec.genotype is None:
        return None
    try:
        if isinstance(spec.genotype, str):
            path = Path(spec.genotype).expanduser()
            genotype, source = Genotype.load(path), str(path)
        else:
            genotype, source = Genotype.from_dict(spec.genotype, source="spec genotype"), "spec genotype"
        genotype.notes = [f"genotype ({source}): {note}" for note in genotype.notes]
        return genotype
    except SpecError as error:
        raise SpecError([f"genotype ({error.source}): {line}" for line in error.errors], label) from None
    except BionasError as error:
        raise SpecError([f"genotype: {error}"], label) from None
