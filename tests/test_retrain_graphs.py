"""What a CPU can show about the retrain step a CUDA graph replays: after the first step no host read and the
same ATen operators with other batches, another learning rate and another drop-path probability (both tensors
filled in place), and the numbers of a plain training loop."""

import pytest
import torch
import torch.nn.functional as F

from bionas.graphs import LearningRates
from bionas.retrain import make_optimizer, train_step
from bionas.space import BIONAS_DARTS, DARTS_V2, Network
from bionas.spec import RetrainSpec
from sync_support import forbid_host_syncs, record_ops

RECIPE = RetrainSpec(epochs=4, batch_size=6, lr=0.05, drop_path=0.3, auxiliary=True, auxiliary_weight=0.4,
                     grad_clip=5.0)
CPU = torch.device("cpu")


def network(genotype, seed=0):
    torch.manual_seed(seed)
    return Network(genotype, channels=4, cells=3, num_classes=10, in_channels=1, auxiliary=True, image_size=12)


def batches(count: int):
    gen = torch.Generator().manual_seed(1)
    return [(torch.rand(6, 1, 12, 12, generator=gen), torch.randint(10, (6,), generator=gen)) for _ in range(count)]


def graph_ready(model):
    """The retrain's objects under runtime.cuda_graphs: capturable optimizer, tensor lr and drop-path probability."""
    optimizer, scheduler = make_optimizer(model, RECIPE, capturable=True)
    rates = LearningRates(optimizer, CPU, True)
    model.drop_path_prob = torch.zeros(())
    return optimizer, scheduler, rates, train_step(model, model.forward_with_aux, optimizer, RECIPE, CPU, "off",
                                                   cache=False)


def set_epoch(model, scheduler, rates, epoch):
    model.drop_path_prob.fill_(RECIPE.drop_path * epoch / RECIPE.epochs)
    scheduler.step(epoch)
    rates.update()


@pytest.mark.parametrize("genotype", [DARTS_V2, BIONAS_DARTS], ids=["bp", "mixed rules"])
def test_retrain_step_after_the_first_reads_nothing_on_the_host_and_runs_the_same_operators(genotype):
    model = network(genotype).train()
    optimizer, scheduler, rates, step = graph_ready(model)
    data = batches(4)
    set_epoch(model, scheduler, rates, 0)
    step(*data[0])
    ops = []
    for epoch, (x, y) in enumerate(data[1:], start=1):
        set_epoch(model, scheduler, rates, epoch)  # another lr, another drop-path probability
        with forbid_host_syncs(), record_ops() as names:
            step(x, y)
        ops.append(names)
    assert ops[0] == ops[1] == ops[2] and "aten::bernoulli_" in " ".join(ops[0])
    assert optimizer.param_groups[0]["lr"] is rates.tensors[0]


def test_retrain_steps_give_the_numbers_of_a_plain_loop():
    model, reference = network(DARTS_V2).train(), network(DARTS_V2).train()
    optimizer, scheduler, rates, step = graph_ready(model)
    data = batches(4)
    lrs, drops = [], []
    for epoch, (x, y) in enumerate(data):
        set_epoch(model, scheduler, rates, epoch)
        lrs.append(float(rates.tensors[0]))
        drops.append(float(model.drop_path_prob))
        torch.manual_seed(10 + epoch)
        step(x, y)
    assert len(set(lrs)) == 4 and len(set(drops)) == 4
    # the same written out: SGD with classical momentum, lr a tensor, drop path at a tensor probability
    sgd = torch.optim.SGD(reference.parameters(), lr=torch.tensor(lrs[0]), momentum=RECIPE.momentum,
                          weight_decay=RECIPE.weight_decay, fused=True)
    for epoch, (x, y) in enumerate(data):
        sgd.param_groups[0]["lr"].fill_(lrs[epoch])
        reference.drop_path_prob = torch.tensor(drops[epoch])
        torch.manual_seed(10 + epoch)
        logits, aux = reference.forward_with_aux(x)
        loss = F.cross_entropy(logits, y) + RECIPE.auxiliary_weight * F.cross_entropy(aux, y)
        sgd.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), RECIPE.grad_clip)
        sgd.step()
    for (name, got), want in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(got, want), name


def test_graph_ready_retrain_steps_agree_with_the_default_ones():
    """Mixed rules (frsf, usf), no drop path: a fused SGD with a tensor lr rounds differently, nothing more (no
    rule reading a stale cache of its weights: a fused step leaves their version counters, mark_stepped bumps)."""
    recipe = RECIPE.model_copy(update={"drop_path": 0.0})
    models = []
    for graphs in (False, True):
        model = network(BIONAS_DARTS).train()
        optimizer, scheduler = make_optimizer(model, recipe, capturable=graphs)
        rates = LearningRates(optimizer, CPU, graphs)
        step = train_step(model, model.forward_with_aux, optimizer, recipe, CPU, "off")
        for epoch, (x, y) in enumerate(batches(4)):
            scheduler.step(epoch)
            rates.update()
            step(x, y)
        models.append(model.state_dict())
    for name, value in models[0].items():
        if value.is_floating_point():
            torch.testing.assert_close(models[1][name], value, rtol=1e-4, atol=1e-6, msg=name)
