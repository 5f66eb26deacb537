"""random: valid uniformly sampled cells, reproducible genotypes, plain mode, the selection of the best."""

import torch
from search_support import TINY_SPACE, make_supernet, mnist, run_search, tiny_data  # noqa: F401

import bionas
from bionas.seeds import stream_generator
from bionas.space import SearchSpace
from bionas_search import random_search
from bionas_search.random_search import sample_genotypes, sample_weights


def test_sampled_cells_are_valid_and_uniform():
    space = SearchSpace({"nodes": 4})  # the paper's 22 candidates, 14 edges
    gen = stream_generator(0)
    counts = torch.zeros(space.num_candidates)
    for _ in range(200):
        weights = sample_weights(space, gen)
        for w in weights.values():
            assert w.shape == (14, 22) and set(w.unique().tolist()) == {0.0, 1.0}
            assert (w.sum(1) <= 1).all()  # one candidate per kept edge
            first = 0
            for node in range(4):
                assert w[first : first + 2 + node].sum() == 2  # two distinct incoming edges
                first += 2 + node
            counts += w.sum(0)
    assert counts[space.index("none")] == 0
    chosen = counts[1:]  # 21 candidates, 3200 draws: each about 152 (std about 12)
    assert chosen.min() > 100 and chosen.max() < 210, chosen


def test_sample_genotypes_is_reproducible_and_valid():
    first = sample_genotypes(TINY_SPACE, 5, seed=3)
    assert sample_genotypes(SearchSpace(TINY_SPACE), 2, seed=3) == first[:2]
    assert sample_genotypes(TINY_SPACE, 5, seed=4) != first
    for genotype in first:
        genotype.validate()
        assert all(edge.op != "none" for edge in genotype.normal + genotype.reduce)


def test_plain_mode_returns_the_first_sample_for_the_caller_to_train(mnist):
    records = []
    strategy = bionas.get_search("random", mode="plain")
    supernet = make_supernet(strategy, mnist)
    data = tiny_data(mnist, seed=7)
    result = strategy.search(supernet, data, bionas.Runtime(quiet=True, log=records.append))
    assert result.genotype == sample_genotypes(supernet.space, 1, seed=7)[0]
    assert records == result.history and records[0]["mode"] == "plain"


def test_the_selection_returns_the_best_scored_sample(mnist, monkeypatch):
    # a stand-in score of an architecture: accuracy = its share of sep_conv edges
    space = SearchSpace(TINY_SPACE)
    convs = [i for i, c in enumerate(space.candidates) if c.op == "sep_conv_3x3"]

    def share(weights):
        return sum(float(w[:, convs].sum()) for w in weights.values()) / sum(float(w.sum()) for w in weights.values())

    def fake_score(run, batches, weights=None, name="score"):
        if callable(weights):  # the per-epoch validation
            return 2.3, 0.1
        return 1.0 - share(weights), share(weights)

    monkeypatch.setattr(random_search, "score", fake_score)
    result, _ = run_search("random", {"epochs": 1, "batch_size": 16, "samples": 40, "eval_batches": 1, "top_k": 5},
                           mnist)
    gen = stream_generator(0, random_search._SELECT)  # the samples the selection drew (run seed 0)
    shares = [share(sample_weights(space, gen)) for _ in range(40)]
    selection = result.history[-1]["selection"]
    assert selection["valid_accuracy"] == max(shares) == shares[selection["sample"]]
    assert len(selection["top"]) == 5 and sorted(t["sample"] for t in selection["top"]) == sorted(
        sorted(range(40), key=lambda i: (-shares[i], i))[:5])
    kept = result.genotype.normal + result.genotype.reduce
    assert sum(e.op == "sep_conv_3x3" for e in kept) / len(kept) == max(shares)
