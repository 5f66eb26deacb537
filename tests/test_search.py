"""Search strategies: registration, space defaults, tiny searches on MNIST, bit-exact resume, divergence."""

import itertools
import math

import pytest
import torch
from search_support import Killed, make_supernet, mnist, run_search, tiny_data, without_times  # noqa: F401

import bionas
from bionas.checkpoint import Checkpointer
from bionas.search import resolve_space
from bionas.search.epochs import SearchRun, recalibrate_batch_norm, score
from bionas.space import Genotype, SearchSpace, Supernet
from bionas.spec import SpaceSpec
from bionas.training import TrainingDiverged

# Each strategy at a tiny size: 2 epochs of 3 steps of 16 images.
STRATEGIES = {
    "darts-first": ("darts", {"epochs": 2, "batch_size": 16, "warmup_epochs": 1}),
    "darts-second": ("darts", {"epochs": 2, "batch_size": 16, "order": "second"}),
    "egnas": ("egnas", {"epochs": 2, "batch_size": 16, "start_epoch": 0, "population": 4, "samplings": 2,
                        "fitness_batch_size": 16}),
    "random": ("random", {"epochs": 2, "batch_size": 16, "samples": 6, "eval_batches": 1, "top_k": 2}),
}
SPACES = {"egnas": {"channels": 8}}  # a multiple of its default partial channels (K = 4)
RECORD_FIELDS = {"stage", "epoch", "strategy", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "lr",
                 "alphas", "genotype", "seconds"}  # fmt: skip


def test_the_three_strategies_are_registered_with_documented_options():
    names = {info.name for info in bionas.list_plugins("search")}
    assert {"darts", "egnas", "random"} <= names
    darts = bionas.get_search("darts")
    o = darts.options  # DARTS's search hyperparameters (REFERENCES.md)
    assert (o.epochs, o.batch_size, o.lr, o.lr_min, o.momentum, o.weight_decay, o.grad_clip) == (
        50, 64, 0.025, 0.001, 0.9, 3e-4, 5.0)
    assert (o.arch_lr, o.arch_betas, o.arch_weight_decay, o.order) == (3e-4, (0.5, 0.999), 1e-3, "first")
    e = bionas.get_search("egnas").options  # EG-NAS (Cai et al. 2024)
    assert (e.epochs, e.batch_size, e.lr, e.population, e.samplings, e.sigma_min, e.similarity_weight,
            e.alpha_step, e.start_epoch) == (50, 256, 0.1, 50, 3, 0.02, 0.4, 0.1, 15)
    with pytest.raises(bionas.SpecError, match="order"):
        bionas.get_search("darts", order="third")


def test_partial_channels_default_to_the_strategy_s():
    spec = SpaceSpec()
    assert spec.partial_channels is None
    egnas, darts = bionas.get_search("egnas"), bionas.get_search("darts")
    assert resolve_space(spec, type(egnas)).partial_channels == 4
    assert resolve_space(spec, type(darts)).partial_channels == 1
    assert resolve_space(spec).partial_channels == 1
    assert resolve_space(SpaceSpec(partial_channels=2), type(egnas)).partial_channels == 2  # a spec's value stays
    assert spec.partial_channels is None  # a copy is returned


@pytest.mark.parametrize("case", list(STRATEGIES))
def test_a_search_resumed_from_its_checkpoint_repeats_the_uninterrupted_one(mnist, tmp_path, case):
    name, options = STRATEGIES[case]
    space = SPACES.get(name)
    result, supernet = run_search(name, options, mnist, space=space)
    # the tiny search: a valid genotype of the space, one full record per epoch
    result.genotype.validate()
    assert isinstance(result.genotype, Genotype) and len(result.genotype.normal) == 4
    assert [r["epoch"] for r in result.history] == [0, 1] and result.seconds > 0
    for record in result.history:
        assert RECORD_FIELDS <= set(record) and record["strategy"] == name
        assert math.isfinite(record["train_loss"]) and 0 <= record["valid_accuracy"] <= 1
    if name != "random":
        assert torch.tensor(result.history[-1]["alphas"]["normal"]).shape == supernet.alphas_normal.shape
        assert result.genotype == supernet.genotype()  # the DARTS rule over the searched alphas
    # killed at epoch 1 (its record logged, its checkpoint not yet written), then resumed
    checkpoint = Checkpointer(tmp_path / "search.safetensors", "search", spec={"case": case})
    with pytest.raises(Killed):
        run_search(name, options, mnist, checkpoint, kill_at=1, space=space)
    assert checkpoint.load()["epoch"] == 0
    resumed, resumed_supernet = run_search(name, options, mnist, checkpoint, space=space)
    assert without_times(resumed.history) == without_times(result.history)
    assert resumed.genotype == result.genotype
    assert resumed.seconds >= resumed.history[-1]["seconds"] > 0
    for key, value in supernet.state_dict().items():
        assert torch.equal(value, resumed_supernet.state_dict()[key]), key
    # a finished search resumed returns its result without training again
    again, _ = run_search(name, options, mnist, checkpoint, space=space)
    assert without_times(again.history) == without_times(result.history) and again.genotype == result.genotype


def test_warmup_epochs_train_the_weights_only(mnist):
    result, supernet = run_search("darts", {"epochs": 1, "batch_size": 16, "warmup_epochs": 1}, mnist)
    initial = make_supernet(bionas.get_search("darts"), mnist)
    assert result.history[0]["arch_updates"] is False
    assert torch.equal(supernet.alphas_normal, initial.alphas_normal)


def test_a_diverging_search_stops_and_keeps_its_last_checkpoint(mnist, tmp_path):
    strategy = bionas.get_search("darts", epochs=3, batch_size=16)
    supernet = make_supernet(strategy, mnist)
    checkpoint = Checkpointer(tmp_path / "search.safetensors", "search")
    train_epoch = strategy.train_epoch

    def poisoned(run, epoch, bar):
        if epoch == 1:
            with torch.no_grad():
                supernet.classifier.weight.fill_(float("nan"))
        return train_epoch(run, epoch, bar)

    strategy.train_epoch = poisoned
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        strategy.search(supernet, tiny_data(mnist), bionas.Runtime(quiet=True), checkpoint)
    state = checkpoint.load()
    assert state["epoch"] == 0 and torch.isfinite(state["supernet"]["classifier.weight"]).all()


def test_a_supernet_built_from_an_unresolved_space_has_no_partial_channels(mnist):
    from bionas.space import SearchSpace

    net = Supernet(SearchSpace({"channels": 4, "cells": 3}), 10)
    assert all(edge.partial_channels == 1 for cell in net.cells for edge in cell.edges)


def test_bn_recalibration_averages_the_statistics_of_the_first_weight_batches(mnist):
    result, supernet = run_search("darts", {"epochs": 1, "batch_size": 16, "warmup_epochs": 1,
                                            "bn_recalibration": 2}, mnist)
    norms = [m for m in supernet.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == 0.1 for m in norms)  # each layer's momentum is back
    first = norms[0]
    inputs = []
    handle = first.register_forward_hook(lambda module, args, output: inputs.append(args[0].detach()))
    run = SearchRun(supernet, tiny_data(mnist), bionas.Runtime(quiet=True))
    batches = list(itertools.islice(run.data.loader("weights", 16, train=False), 2))
    recalibrate_batch_norm(run, batches)
    handle.remove()
    # the plain average of the two batches' statistics, whatever the running statistics were before
    expected_mean = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
    expected_var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in inputs]).mean(0)
    assert torch.allclose(first.running_mean, expected_mean, atol=1e-6)
    assert torch.allclose(first.running_var, expected_var, atol=1e-5)
    # the search recalibrated on the same batches before its validation: it recorded what these statistics
    # give, whatever the batch of the validation pass (eval_batch_size, 256 there; 16 here)
    loss, accuracy = score(run, run.data.loader("arch", 16, train=False))
    assert accuracy == result.history[-1]["valid_accuracy"]
    assert math.isclose(loss, result.history[-1]["valid_loss"], rel_tol=1e-5)


def test_backward_to_stores_what_backward_stores_without_a_detach_per_parameter():
    from torch.utils._python_dispatch import TorchDispatchMode

    from bionas.search.epochs import backward_to

    class Detaches(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func is torch.ops.aten.detach.default
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    space = SearchSpace({"ops": ["skip_connect", "sep_conv_3x3"], "rules": ["usf", "fa", "bp"], "channels": 4,
                         "cells": 2, "nodes": 2})  # fmt: skip
    net = Supernet(space, 10, in_channels=1).to(memory_format=torch.channels_last)
    shared, expanded = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    params, x = [*net.weight_parameters(), shared, expanded], torch.rand(2, 1, 8, 8)

    def loss():  # `shared` gets the very tensor `net`'s output gets; `expanded` a stride-0 gradient
        return net(x).square().sum() + (shared + net(x)[0, :2]).sum() + expanded.sum()

    counts = []
    for backward in (lambda value: value.backward(inputs=params), lambda value: backward_to(value, params)):
        for p in params:
            p.grad = None
        value = loss()
        with Detaches() as counter:
            backward(value)
        counts.append(counter.count)
        if len(counts) == 1:
            expected = [p.grad for p in params]
    assert counts[0] - counts[1] >= len(params) - 2  # one per parameter, but for the two copied gradients
    for p, grad in zip(params, expected):
        assert torch.equal(p.grad, grad) and p.grad.stride() == grad.stride()
    assert expanded.grad.stride() == (1,)
    torch._foreach_mul_([p.grad for p in params], 2.0)  # as clipping does: every gradient its own memory
    for p, grad in zip(params, expected):
        assert torch.equal(p.grad, 2 * grad)
    backward_to(loss(), params)  # a gradient already held is added to, as by backward
    for p, grad in zip(params, expected):
        torch.testing.assert_close(p.grad, 3 * grad)
