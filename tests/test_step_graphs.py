"""What a CPU can show about the search steps a CUDA graph replays (runtime.cuda_graphs; docs/scaling.md).

With Runtime(cuda_graphs=True) on the CPU the steps are built as for a capture (fused optimizers with tensor
learning rates, no autocast cache) and called plainly (StepGraph off CUDA). After the first step: no host
read (tests/sync_support.py), the same ATen operators step after step with other batches and another
learning rate, and the same numbers as a plain loop of the DARTS first-order step.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bionas
from bionas.rules import no_weight_gradients
from bionas.training import eval_mode
from search_support import make_supernet, mnist, tiny_data  # noqa: F401 (the fixture)
from sync_support import forbid_host_syncs, record_ops

def started(name: str, dataset, graphs: bool, rules=("usf", "fa"), **options):
    """A strategy and its SearchRun, prepared and at epoch 0, with the weights part's batches."""
    strategy = bionas.get_search(name, epochs=4, batch_size=8, **options)
    supernet = make_supernet(strategy, dataset, rules=list(rules))
    run = strategy.start(supernet, tiny_data(dataset, images=48), bionas.Runtime(quiet=True, cuda_graphs=graphs))
    strategy.prepare(run)
    return strategy, run


def set_epoch(strategy, run, epoch: int) -> None:
    """What train_epoch does before its steps: the schedule's lr into the optimizers, the epoch's values."""
    run.scheduler.step(epoch)
    for rates in run.learning_rates:
        rates.update()
    run.epoch_values = {}
    strategy.before_epoch(run, epoch)


def weight_batches(run, count: int):
    run.loader.set_epoch(0)
    batches = list(run.loader)
    return [batches[i % len(batches)] for i in range(count)]


@pytest.mark.parametrize(("name", "options"), [
    ("darts", {}), ("darts", {"order": "second"}), ("egnas", {"start_epoch": 10, "fitness_batch_size": 8})],
    ids=["darts", "darts second order", "egnas"])
def test_search_step_after_the_first_reads_nothing_on_the_host_and_runs_the_same_operators(mnist, name, options):
    strategy, run = started(name, mnist, graphs=True, **options)
    batches = weight_batches(run, 4)
    set_epoch(strategy, run, 0)
    strategy.train_step(run, 0, *batches[0])  # the first step makes the optimizers' state
    ops = []
    for epoch, (x, y) in enumerate(batches[1:], start=1):  # every step another lr (the cosine schedule)
        set_epoch(strategy, run, epoch)
        with forbid_host_syncs(), record_ops() as names:
            strategy.train_step(run, epoch, x, y)
        ops.append(names)
    assert ops[0] == ops[1] == ops[2] and len(ops[0]) > 100


def test_random_weight_step_reads_nothing_on_the_host_and_runs_eagerly(mnist):
    """Its operators differ per sampled architecture by design: it is not replayed (docs/search.md)."""
    strategy, run = started("random", mnist, graphs=True)
    batches = weight_batches(run, 3)
    set_epoch(strategy, run, 0)
    strategy.train_step(run, 0, *batches[0])
    for x, y in batches[1:]:
        with forbid_host_syncs():
            strategy.train_step(run, 0, x, y)
    assert run.graphs_on and not run._graphs  # no step graph
    assert isinstance(run.optimizer.param_groups[0]["lr"], float) and run.optimizer.defaults["foreach"]


def test_a_masked_weight_step_would_train_unsampled_hebbian_candidates(mnist):
    """Why random search's weight step stays eager (docs/search.md): masked by a one-hot sample, every
    candidate runs, and hebbian's gradient, made in the forward from the candidate's own activity, reaches
    the unsampled ones; bp's and fa's do not (they follow the output error, which the mask makes 0)."""
    from bionas.seeds import stream_generator
    from bionas.space.sampling import sample_weights

    changed = {}
    for rules in (("hebbian", "bp"), ("bp", "fa")):
        strategy, run = started("random", mnist, graphs=False, rules=rules)
        x, y = weight_batches(run, 1)[0]
        weights = sample_weights(run.supernet.space, stream_generator(0, 7))
        trained = []
        for skip_zero in (True, False):
            run.supernet.zero_grad(set_to_none=True)
            F.cross_entropy(run.supernet(x, weights, skip_zero=skip_zero), y).backward()
            trained.append({name for name, p in run.supernet.named_parameters()
                            if p.grad is not None and p.grad.abs().sum() > 0 and "alphas" not in name})
        changed[rules] = trained[1] - trained[0]
    assert changed[("bp", "fa")] == set() and changed[("hebbian", "bp")]


def egnas_mixings(run, count: int, seed: int):
    """`count` EG-NAS candidates' mixing weights, from CMA-ES-like samples around the uniform mixing."""
    from bionas_search.egnas import candidate_weights

    shape = run.supernet.alphas_normal.shape
    rng = np.random.default_rng(seed)
    return [candidate_weights(1.0 / shape[1] + 0.5 * rng.standard_normal(2 * shape.numel()), shape)[1]
            for _ in range(count)]


def test_egnas_population_scoring_reads_nothing_on_the_host_and_runs_the_same_operators(mnist):
    strategy, run = started("egnas", mnist, graphs=True, start_epoch=1, fitness_batch_size=8)
    x, y = next(iter(run.loaders["fitness"]))
    with torch.no_grad(), eval_mode(run.supernet):
        strategy._scores(run, x, y, egnas_mixings(run, 1, seed=0))  # the first makes the graph
        ops = []
        for seed in (1, 2):  # other candidates, the same kernels; results stay on the device
            with forbid_host_syncs(), record_ops() as names:
                scores = strategy._scores(run, x, y, egnas_mixings(run, 3, seed))
            ops.append(names)
    assert ops[0] == ops[1] and scores.device == run.device and scores.shape == (3, 2)


@pytest.mark.parametrize("graphs", [False, True])
def test_egnas_population_scores_are_the_loss_and_accuracy_of_each_candidate(mnist, graphs):
    """Masked (graph-ready) or skipping zero weights (default): cross-entropy and accuracy of the plain forward."""
    strategy, run = started("egnas", mnist, graphs=graphs, start_epoch=1, fitness_batch_size=8)
    x, y = next(iter(run.loaders["fitness"]))
    mixings = egnas_mixings(run, 3, seed=3)
    with torch.no_grad(), eval_mode(run.supernet):
        scores = strategy._scores(run, x, y, mixings)
        for row, mixing in zip(scores, mixings):
            logits = run.supernet(x, mixing)
            want = [F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()]
            torch.testing.assert_close(row, torch.stack(want), rtol=1e-5, atol=1e-6)


def test_random_sample_scoring_reads_nothing_on_the_host_and_runs_the_same_operators(mnist):
    """Under graphs the sample masks every candidate: its kernels do not depend on which one was drawn
    (without graphs the unsampled candidates are skipped, a decision of the host: other kernels per sample)."""
    from bionas.search.epochs import forward_pass
    from bionas.seeds import stream_generator
    from bionas.space.sampling import sample_weights

    ops = {}
    for graphs in (True, False):
        strategy, run = started("random", mnist, graphs=graphs)
        x, y = weight_batches(run, 1)[0]
        gen = stream_generator(0, 5)
        ops[graphs] = []
        with torch.no_grad(), eval_mode(run.supernet):
            forward_pass(run, x, y, sample_weights(run.supernet.space, gen), "sample_score")
            for _ in range(2):
                with forbid_host_syncs(), record_ops() as names:
                    forward_pass(run, x, y, sample_weights(run.supernet.space, gen), "sample_score")
                ops[graphs].append(names)
    assert ops[True][0] == ops[True][1] and ops[False][0] != ops[False][1]


def test_graph_ready_random_scores_agree_with_the_default_ones(mnist):
    """Masking the unsampled candidates (eval mode, no gradients) computes what skipping them does."""
    from bionas.search.epochs import score
    from bionas.seeds import stream_generator
    from bionas.space.sampling import sample_weights

    results = []
    for graphs in (False, True):
        strategy, run = started("random", mnist, graphs=graphs)
        batches = weight_batches(run, 4)
        gen = stream_generator(0, 6)
        results.append([score(run, batches, sample_weights(run.supernet.space, gen), "sample_score")
                        for _ in range(5)])
    assert len({accuracy for _, accuracy in results[0]}) > 1  # the samples differ
    for (loss, accuracy), (want_loss, want_accuracy) in zip(results[1], results[0]):
        assert accuracy == want_accuracy and loss == pytest.approx(want_loss, rel=1e-5)


def test_score_at_the_alphas_reads_nothing_on_the_host(mnist):
    """The forward-only pass of validation (eval mode, no gradients), after steps that changed the weights."""
    from bionas.search.epochs import score
    from bionas.training import eval_mode

    strategy, run = started("darts", mnist, graphs=True)
    batches = weight_batches(run, 3)
    set_epoch(strategy, run, 0)
    ops = []
    for x, y in batches:
        strategy.train_step(run, 0, x, y)
        if not ops:
            score(run, [(x, y)])  # the first makes the graph
            ops.append(None)
            continue
        with torch.no_grad(), eval_mode(run.supernet), forbid_host_syncs(), record_ops() as names:
            run.graph("score", None)(x, y)
        ops.append(names)
    assert ops[1] == ops[2]


def reference_darts(supernet, batches, arch_batches, lrs, graphs: bool, grad_clip=5.0):
    """DARTS first order written out: Adam on the alphas (loss of an architecture batch, no weight
    gradients), then SGD on the weights, clipped; the optimizers configured as the strategy's."""
    arch = supernet.arch_parameters()
    weights = [p for p in supernet.weight_parameters() if p.requires_grad]
    o = bionas.get_search("darts").options
    if graphs:
        adam = torch.optim.Adam(arch, lr=torch.tensor(o.arch_lr), betas=o.arch_betas,
                                weight_decay=o.arch_weight_decay, fused=True, capturable=True)
        sgd = torch.optim.SGD(weights, lr=torch.tensor(lrs[0]), momentum=o.momentum, weight_decay=o.weight_decay,
                              fused=True)
    else:
        adam = torch.optim.Adam(arch, lr=o.arch_lr, betas=o.arch_betas, weight_decay=o.arch_weight_decay)
        sgd = torch.optim.SGD(weights, lr=lrs[0], momentum=o.momentum, weight_decay=o.weight_decay, foreach=True)
    for (x, y), (xa, ya), lr in zip(batches, arch_batches, lrs):
        if graphs:
            sgd.param_groups[0]["lr"].fill_(lr)
        else:
            sgd.param_groups[0]["lr"] = lr
        adam.zero_grad(set_to_none=True)
        with no_weight_gradients():
            F.cross_entropy(supernet(xa), ya).backward(inputs=arch)
        adam.step()
        if graphs:  # fused kernels leave the version counters, which the supernet's caches of stacked weights read
            torch.autograd.graph.increment_version(arch)
        sgd.zero_grad(set_to_none=True)
        F.cross_entropy(supernet(x), y).backward(inputs=weights)
        torch.nn.utils.clip_grad_norm_(weights, grad_clip)
        sgd.step()
        if graphs:
            torch.autograd.graph.increment_version([w for w in weights if w.grad is not None])


@pytest.mark.parametrize("graphs", [False, True])
def test_darts_steps_give_the_numbers_of_a_plain_loop(mnist, graphs):
    strategy, run = started("darts", mnist, graphs=graphs)
    reference = make_supernet(strategy, mnist, rules=["usf", "fa"])
    reference.load_state_dict(run.supernet.state_dict())
    batches, arch_batches, lrs = weight_batches(run, 4), [], []
    for epoch, (x, y) in enumerate(batches):
        set_epoch(strategy, run, epoch)
        lrs.append(float(run.optimizer.param_groups[0]["lr"]))
        arch_batches.append(next(run.epoch_values["arch_batches"]))
        # the strategy's step on the same architecture batch: feed the one drawn above
        run.epoch_values["arch_batches"] = iter([arch_batches[-1]])
        strategy.train_step(run, epoch, x, y)
    assert len(set(lrs)) == 4
    reference.train()
    reference_darts(reference, batches, arch_batches, lrs, graphs)
    for (name, got), want in zip(run.supernet.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(got, want), name


def test_graph_ready_darts_steps_agree_with_the_default_ones(mnist):
    """Fused optimizers with tensor learning rates round differently, nothing more: no stale cached weights."""
    states = []
    for graphs in (False, True):
        strategy, run = started("darts", mnist, graphs=graphs)
        for epoch, (x, y) in enumerate(weight_batches(run, 4)):
            set_epoch(strategy, run, epoch)
            strategy.train_step(run, epoch, x, y)
        states.append(run.supernet.state_dict())
    for name, value in states[0].items():
        if value.is_floating_point():
            torch.testing.assert_close(states[1][name], value, rtol=1e-4, atol=1e-6, msg=name)
