"""Genotype: JSON round trip, validation with suggestions, the DARTS derivation rule, printing, drawing."""

import json
import math

import pytest
import torch
from space_support import rules  # noqa: F401  (fixture)

from bionas.errors import SpecError
from bionas.space import BIONAS_DARTS, DARTS_V2, Edge, Genotype, SearchSpace, Supernet, build_network, derive_cell
from bionas.space.candidates import Candidate

# DARTS_V2 written out (quark0/darts cnn/genotypes.py), to check the module constant against: its
# skip_connects are all at stride 1, identities without weights, so without a rule.
DARTS_V2_JSON = {
    "normal": [
        {"op": "sep_conv_3x3", "rule": "bp", "source": 0}, {"op": "sep_conv_3x3", "rule": "bp", "source": 1},
        {"op": "sep_conv_3x3", "rule": "bp", "source": 0}, {"op": "sep_conv_3x3", "rule": "bp", "source": 1},
        {"op": "sep_conv_3x3", "rule": "bp", "source": 1}, {"op": "skip_connect", "rule": None, "source": 0},
        {"op": "skip_connect", "rule": None, "source": 0}, {"op": "dil_conv_3x3", "rule": "bp", "source": 2},
    ],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [
        {"op": "max_pool_3x3", "rule": None, "source": 0}, {"op": "max_pool_3x3", "rule": None, "source": 1},
        {"op": "skip_connect", "rule": None, "source": 2}, {"op": "max_pool_3x3", "rule": None, "source": 1},
        {"op": "max_pool_3x3", "rule": None, "source": 0}, {"op": "skip_connect", "rule": None, "source": 2},
        {"op": "skip_connect", "rule": None, "source": 2}, {"op": "max_pool_3x3", "rule": None, "source": 1},
    ],
    "reduce_concat": [2, 3, 4, 5],
    "fixed_rules": {"stem": "bp", "preprocess": "bp", "classifier": "bp", "auxiliary": "bp"},
}  # fmt: skip


def test_darts_v2_constant_is_the_published_genotype(rules):
    assert DARTS_V2.to_dict() == DARTS_V2_JSON
    assert Genotype.from_dict(DARTS_V2_JSON) == DARTS_V2


def test_a_rule_on_an_identity_is_read_as_null_with_a_note(rules):
    """skip_connect at stride 1 (a normal cell; a reduction cell from node 2 on) is the identity: the paper's
    published genotype names rules there; they are read as null, each with a note naming the edge."""
    published = BIONAS_DARTS.to_dict()
    for i in (0, 1, 5):  # the paper's (skip_connect, frsf) edges of the normal cell
        assert published["normal"][i] == {"op": "skip_connect", "rule": None, "source": published["normal"][i]["source"]}
        published["normal"][i]["rule"] = "frsf"
    published["reduce"][1]["rule"] = "brsf"  # stride 2 (from node 1): a FactorizedReduce, whose rule counts
    published["reduce"][2] = {"op": "skip_connect", "rule": "usf", "source": 2}  # stride 1 in a reduction cell
    genotype = Genotype.from_dict(published)
    assert genotype.notes == [
        "normal[0].rule: skip_connect at stride 1 (every edge of a normal cell) has no weights, so rule 'frsf' "
        "cannot apply: read as null",
        "normal[1].rule: skip_connect at stride 1 (every edge of a normal cell) has no weights, so rule 'frsf' "
        "cannot apply: read as null",
        "normal[5].rule: skip_connect at stride 1 (every edge of a normal cell) has no weights, so rule 'frsf' "
        "cannot apply: read as null",
        "reduce[2].rule: skip_connect at stride 1 (an edge of a reduction cell from node 2 on) has no weights, so "
        "rule 'usf' cannot apply: read as null",
    ]
    assert [genotype.normal[i].rule for i in (0, 1, 5)] == [None] * 3
    assert genotype.reduce[1] == Edge("skip_connect", "brsf", 1) and genotype.reduce[2] == Edge("skip_connect", None, 2)
    assert Genotype.from_dict(genotype.to_dict()).notes == []  # what it writes reads back unchanged
    # normal: 3 identities + a pool free, sep_conv frsf 2 and usf 2; reduce: 5 pools + an identity free,
    # the stride-2 skip_connect brsf, dil_conv usf
    assert genotype.rule_counts() == {"free": 10, "usf": 3, "frsf": 2, "brsf": 1}
    with pytest.raises(SpecError) as err:  # a stride-2 skip_connect has weights: it needs its rule
        Genotype.from_dict({**published, "reduce": [{**published["reduce"][0]}, {**published["reduce"][1], "rule": None},
                                                    *published["reduce"][2:]]})
    assert err.value.errors == ["reduce[1].rule: op 'skip_connect' has parameters: give the rule they learn by"]


def test_json_round_trip_through_a_file(rules, tmp_path):
    genotype = Genotype.from_dict({**BIONAS_DARTS.to_dict(), "fixed_rules": {"stem": "fa", "classifier": "usf"}})
    path = genotype.save(tmp_path / "genotype.json")
    assert json.loads(path.read_text())["fixed_rules"] == {
        "stem": "fa", "preprocess": "bp", "classifier": "usf", "auxiliary": "bp"
    }  # fmt: skip
    assert Genotype.load(path) == genotype
    assert Genotype.from_json(genotype.to_json()) == genotype


def test_rule_options_round_trip(toy_plugins, rules):
    data = DARTS_V2.to_dict()
    data["normal"][0]["rule"] = {"name": "toy_rule", "options": {"scale": 0.5}}
    genotype = Genotype.from_json(json.dumps(data))
    assert genotype.normal[0] == Edge("sep_conv_3x3", {"name": "toy_rule", "options": {"scale": 0.5}}, 0)
    assert genotype.to_dict() == data
    assert "sep_conv_3x3/toy_rule{'scale': 0.5}(0)" in str(genotype)


def test_unknown_names_are_reported_with_close_known_ones(rules):
    data = DARTS_V2.to_dict()
    data["normal"][1]["op"] = "sep_conv_3x4"
    data["reduce"][2]["rule"] = "usff"
    data["fixed_rules"]["stem"] = {"name": "bp", "options": {"lr": 1}}
    with pytest.raises(SpecError) as err:
        Genotype.from_dict(data)
    lines = err.value.errors
    assert lines[0].startswith("normal[1].op: unknown op 'sep_conv_3x4'. Did you mean: sep_conv_3x3")
    assert lines[1].startswith("reduce[2].rule: unknown rule 'usff'. Did you mean: usf")
    assert lines[2] == "fixed_rules.stem.options.lr: unknown field (not allowed here)"


def test_malformed_genotypes_name_each_problem(rules):
    data = DARTS_V2.to_dict()
    data["normal"][7]["source"] = 5  # node 5 has inputs 0..4
    data["reduce"] = data["reduce"][:3]
    data["normal_concat"] = [2, 9]
    data["colour"] = "red"
    with pytest.raises(SpecError) as err:
        Genotype.from_dict(data)
    assert err.value.errors == [
        "colour: unknown field (not allowed here)",
        "normal[7].source: a node number in 0..4, got 5",
        "normal_concat: distinct node numbers in 0..5, got [2, 9]",
        "reduce: a non-empty list with two edges per intermediate node",
    ]
    rule_on_pool = DARTS_V2.to_dict()
    rule_on_pool["reduce"][0]["rule"] = "bp"
    del rule_on_pool["normal"][0]["rule"]
    with pytest.raises(SpecError) as err:
        Genotype.from_dict(rule_on_pool)
    assert err.value.errors == [
        "normal[0].rule: op 'sep_conv_3x3' has parameters: give the rule they learn by",
        "reduce[0].rule: op 'max_pool_3x3' is parameter-free, so rule 'bp' cannot apply: its rule must be null",
    ]


def test_printing_is_one_line_per_node():
    lines = str(BIONAS_DARTS).splitlines()
    assert lines[0] == "normal cell (output: concat of nodes 2, 3, 4, 5)"
    assert lines[2] == "  node 3 = sep_conv_3x3/frsf(1) + sep_conv_3x3/usf(2)"
    assert lines[9] == "  node 5 = max_pool_3x3(0) + dil_conv_5x5/usf(3)"
    assert lines[10] == "fixed layers: stem bp, preprocess bp, classifier bp, auxiliary bp"
    assert len(lines) == 11


def test_drawing_writes_a_png(tmp_path):
    path = BIONAS_DARTS.draw(tmp_path / "cells.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_the_drawing_numbers_nodes_as_the_text_does():
    """genotype.png, genotype.json and str(genotype) (report.md) share one numbering: inputs 0 and 1,
    intermediate nodes from 2; every edge is drawn into the node that owns it in the text."""
    from matplotlib.figure import Figure

    from bionas.space.draw import _draw_cell, _positions, rule_colours

    ax = Figure().subplots()
    _draw_cell(ax, BIONAS_DARTS.normal, BIONAS_DARTS.normal_concat, "normal cell",
               rule_colours(BIONAS_DARTS.rules_used()))
    drawn = {text.get_text() for text in ax.texts}
    assert {"$c_{k-2}$ (0)", "$c_{k-1}$ (1)", "2", "3", "4", "5", "$c_{k}$"} <= drawn
    assert not {"0", "1"} & drawn  # the first intermediate node is not drawn as 0
    # edge i is drawn into _positions()[2 + i // 2]: the box there carries that number
    where = {text.get_position(): text.get_text() for text in ax.texts}
    assert [where[_positions(4)[2 + i // 2]] for i in range(8)] == ["2", "2", "3", "3", "4", "4", "5", "5"]
    printed = [line.split(" = ")[0].strip() for line in str(BIONAS_DARTS).splitlines()[1:5]]
    assert printed == ["node 2", "node 3", "node 4", "node 5"]
    assert [f"node {n}" for n in BIONAS_DARTS.normal_concat] == printed


# A hand-worked example of the DARTS rule: 2 intermediate nodes (edges 0-1 into node 2,
# edges 2-4 into node 3), candidates none, max_pool, sep_conv/usf, sep_conv/fa.
CANDIDATES = [Candidate("none", None), Candidate("max_pool_3x3", None), Candidate("sep_conv_3x3", "usf"),
              Candidate("sep_conv_3x3", "fa")]  # fmt: skip
ZERO = [True, False, False, False]
WEIGHTS = [
    [0.70, 0.10, 0.15, 0.05],  # 0 -> 2: none is ignored; strongest other is usf (0.15)
    [0.10, 0.20, 0.30, 0.40],  # 1 -> 2: fa (0.40)
    [0.05, 0.50, 0.25, 0.20],  # 0 -> 3: max_pool (0.50)
    [0.90, 0.04, 0.03, 0.03],  # 1 -> 3: mostly none; its best other weight is only 0.04
    [0.30, 0.20, 0.25, 0.25],  # 2 -> 3: usf and fa tie at 0.25: the first wins (DARTS's strict >)
]
# Node 2 keeps both edges, strongest first: 1 (0.40), then 0 (0.15).
# Node 3 ranks its edges 0 (0.50), 2 (0.25), 1 (0.04) and keeps the first two.
EXPECTED = [Edge("sep_conv_3x3", "fa", 1), Edge("sep_conv_3x3", "usf", 0),
            Edge("max_pool_3x3", None, 0), Edge("sep_conv_3x3", "usf", 2)]  # fmt: skip


def test_derivation_by_the_darts_rule_hand_worked():
    assert derive_cell(WEIGHTS, CANDIDATES, ZERO, nodes=2) == EXPECTED


def test_edge_normalization_weights_rank_the_edges_not_the_ops():
    # Scaling edge 0 -> 3 by 0.1 leaves it 0.05: node 3 now keeps 2 (0.25) and then 0 (0.05).
    edges = derive_cell(WEIGHTS, CANDIDATES, ZERO, nodes=2, edge_weights=[1, 1, 0.1, 1, 1])
    assert edges[2:] == [Edge("sep_conv_3x3", "usf", 2), Edge("max_pool_3x3", None, 0)]


def test_supernet_derives_the_same_genotype_from_its_alphas(rules):
    space = SearchSpace({"ops": ["none", "max_pool_3x3", "sep_conv_3x3"], "rules": ["usf", "fa"], "nodes": 2,
                         "channels": 4, "cells": 1, "fixed_rules": {"stem": "fa"}})  # fmt: skip
    net = Supernet(space, num_classes=3)
    with torch.no_grad():
        for alphas in net.arch_parameters():
            alphas.copy_(torch.tensor([[math.log(w) for w in row] for row in WEIGHTS]))
    genotype = net.genotype()
    assert genotype.normal == EXPECTED and genotype.reduce == EXPECTED
    assert genotype.normal_concat == [2, 3] and genotype.fixed_rules["stem"] == "fa"
    one_hot = torch.eye(4)[[3, 2, 1, 0, 2]]  # ties at 1.0 keep the lower source first; none is never kept
    assert net.genotype({"normal": one_hot, "reduce": one_hot}).normal == [
        Edge("sep_conv_3x3", "fa", 0), Edge("sep_conv_3x3", "usf", 1),
        Edge("max_pool_3x3", None, 0), Edge("sep_conv_3x3", "usf", 2),
    ]  # fmt: skip


def test_the_derivation_gives_an_identity_no_rule(rules):
    """The joint space holds skip_connect once per rule on every edge (its rule counts at stride 2); where a
    kept skip_connect is the identity, the genotype records it without a rule, as reading a genotype does.
    The DARTS rule itself is untouched: the same edges and ops are kept."""
    space = SearchSpace({"ops": ["none", "skip_connect"], "rules": ["usf", "frsf"], "nodes": 2, "channels": 4,
                         "cells": 3})
    frsf = space.index("skip_connect", "frsf")
    weights = torch.full((5, space.num_candidates), 0.1).index_fill_(1, torch.tensor([frsf]), 0.8)
    genotype = Supernet(space, num_classes=3).genotype({"normal": weights, "reduce": weights})
    assert genotype.normal == [Edge("skip_connect", None, 0), Edge("skip_connect", None, 1),
                               Edge("skip_connect", None, 0), Edge("skip_connect", None, 1)]
    # reduction cell: from the inputs (stride 2) a FactorizedReduce learning by frsf
    assert genotype.reduce == [Edge("skip_connect", "frsf", 0), Edge("skip_connect", "frsf", 1),
                               Edge("skip_connect", "frsf", 0), Edge("skip_connect", "frsf", 1)]
    assert Genotype.from_dict(genotype.to_dict()).notes == []  # a searched genotype reads back as it is


def _edge(cell_type, index, **change):
    return lambda data: data[cell_type][index].update(change)


@pytest.mark.parametrize("change", [
    _edge("normal", 1, source=0),                                     # both edges of node 2 from node 0
    lambda data: data.update(normal_concat=[0, 2, 3, 4, 5]),          # a cell input concatenated too
    _edge("normal", 7, op="none", rule=None),                         # an edge that adds zeros
    lambda data: data.update(reduce=data["reduce"][:6], reduce_concat=[2, 3, 4]),  # fewer reduction nodes
], ids=["duplicate-input", "concat-input", "none-edge", "fewer-reduce-nodes"])  # fmt: skip
def test_unusual_but_sound_genotypes_are_accepted_and_build(rules, change):
    """What DARTS's derivation never writes but a hand-written cell may hold, and the network builds and
    trains: accepted (docs/space.md, "Genotype")."""
    data = BIONAS_DARTS.to_dict()
    change(data)
    genotype = Genotype.from_dict(data)
    net = build_network(genotype, {"channels": 4, "cells": 3, "num_classes": 3, "in_channels": 1, "image_size": 8})
    logits = net(torch.rand(2, 1, 8, 8))
    logits.sum().backward()
    assert logits.shape == (2, 3) and all(p.grad is not None for p in net.cells[0].ops.parameters())
