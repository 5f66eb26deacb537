"""PGD's and APGD's iterations as CUDA graph replays, shown on the CPU (docs/attacks.md, "CUDA graphs").

What a CPU can show: a run reads nothing on the host (so each iteration can be captured), its operators
do not depend on the data (so one capture serves every batch), and the graph-ready attack, replayed through
the CPU stand-in backend of tests/test_graphs.py and padded to a fixed batch, gives the eager attack's
adversarial images. The real capture: tests/test_cuda_graphs.py.
"""

import pytest
import torch
from torch import nn

import bionas
from bionas.robustness import evaluate_robustness
from sync_support import forbid_host_syncs, record_ops
from test_graphs import CallAgain

ATTACKS = [
    ("pgd", {"steps": 6}),
    ("pgd", {"steps": 4, "norm": "l2", "eps": 0.5, "restarts": 2}),
    ("apgd", {"steps": 12}),  # checkpoints after iterations 2, 4, 6, 8 and 10 (periods 2, then 2 at least)
    ("apgd", {"steps": 12, "loss": "dlr", "norm": "l2", "eps": 0.5, "restarts": 2}),
]


def small_model(seed: int = 0) -> nn.Module:
    """A conv net with BatchNorm (eval mode: each image's logits are its own, which padding relies on)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    with torch.no_grad():  # statistics other than 0 and 1, so eval mode differs from train mode
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def batch(n: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def single_run(attack, model, x, y, seed=0):
    return attack._single_run(model, x, y, torch.Generator().manual_seed(seed), False)


@pytest.mark.parametrize("name,options", ATTACKS)
def test_a_run_reads_nothing_on_the_host(name, options):
    """Every iteration (APGD's checkpoints too) runs without a host read: a capture can record it."""
    attack, model = bionas.get_attack(name, **options), small_model()
    x, y = batch(5, seed=1)
    single_run(attack, model, x, y)  # warm-up: lazy state outside the check
    with forbid_host_syncs():
        adversarial, _, _ = single_run(attack, model, x, y)
    assert adversarial.shape == x.shape


@pytest.mark.parametrize("name,options", ATTACKS)
def test_the_operators_do_not_depend_on_the_data(name, options):
    """Python decides nothing from the data: other images and labels dispatch the same operators."""
    attack, model = bionas.get_attack(name, **options), small_model()
    lists = []
    for seed in (1, 2):
        x, y = batch(5, seed)
        with record_ops() as ops:
            single_run(attack, model, x, y, seed)
        lists.append(ops)
    assert lists[0] == lists[1] and len(lists[0]) > options["steps"] * 10


@pytest.mark.parametrize("name,options", ATTACKS)
def test_replayed_padded_attack_gives_the_eager_adversarial_images(name, options):
    """Batches of 5, 3 and 8 images, padded to 8 and replayed from one capture, give what the eager attack
    gives on each batch as it is."""
    eager = bionas.get_attack(name, **options)
    graphed = bionas.get_attack(name, **options).with_cuda_graphs(True, 8)
    graphed.graph_backend = backend = CallAgain()
    model = small_model()
    for seed, n in enumerate((5, 3, 8)):
        x, y = batch(n, seed)
        expected = eager.run(model, x, y, seed=seed).adversarial
        assert torch.allclose(graphed.run(model, x, y, seed=seed).adversarial, expected, atol=1e-6)
    ((_, step),) = graphed._graphs.values()
    assert step.captured and step.eager_calls == 0 and backend.events.count("capture") == 1
    assert step.replays > 2 * (options["steps"] - 3)  # the padded batches replayed too


def test_the_evaluation_hands_the_setting_and_its_batch_to_the_attacks():
    """evaluate_robustness(cuda_graphs=True) pads every batch of clean-correct points to its batch size and
    reports what the eager evaluation reports."""
    model, (x, y) = small_model(), batch(24, seed=5)
    y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10  # a third wrong when clean: the attacked batches are short
    attack = bionas.get_attack("pgd", steps=5)
    attack.graph_backend = CallAgain()
    reports = [evaluate_robustness(model, x, y, [attack], ["4/255", "8/255"], batch_size=10, cuda_graphs=graphs)
               for graphs in (False, True)]
    assert [r.robust_accuracy for r in reports[0].rows] == [r.robust_accuracy for r in reports[1].rows]
    assert reports[0].rows[0].attacked == 16


def test_padding_copies_the_first_image_and_is_off_without_graphs():
    attack = bionas.get_attack("pgd")
    x = torch.rand(3, 2)
    assert attack.padded(x)[0] is x and attack.with_cuda_graphs(True, None).padded(x)[0] is x
    assert attack.with_cuda_graphs(True, 5).padded(x)[0] is x  # on the CPU nothing is captured
    attack.graph_backend = CallAgain()
    (padded,) = attack.with_cuda_graphs(True, 5).padded(x)
    assert torch.equal(padded[:3], x) and torch.equal(padded[3:], x[:1].expand(2, 2))
    # rule gradients keep host-side state (brsf's clock): they never replay
    assert not bionas.get_attack("pgd", gradient="rule").with_cuda_graphs(True, 5).replays


@pytest.mark.parametrize("name", ["pgd", "apgd"])
def test_on_the_bionas_darts_network_with_its_rules(name):
    """The network a run attacks (a genotype, mixed rules, exact gradients): no host read in a run, and the
    replayed padded attack gives the eager images."""
    from bionas.space import BIONAS_DARTS, Network

    torch.manual_seed(0)
    model = Network(BIONAS_DARTS, channels=4, cells=2, num_classes=10, in_channels=3, image_size=8).eval()
    x, y = batch(4, seed=3)
    eager = bionas.get_attack(name, steps=5)
    single_run(eager, model, x, y)
    with forbid_host_syncs():
        single_run(eager, model, x, y)
    graphed = bionas.get_attack(name, steps=5).with_cuda_graphs(True, 6)
    graphed.graph_backend = CallAgain()
    assert torch.allclose(graphed.run(model, x, y).adversarial, eager.run(model, x, y).adversarial, atol=1e-6)


def test_an_apgd_checkpoint_runs_the_operators_of_any_other_iteration():
    """The schedule (momentum, checkpoint, threshold) is data for the replay, not Python deciding kernels."""
    from bionas.attacks import per_image
    from bionas_attacks.apgd import State

    attack, model = bionas.get_attack("apgd", steps=10), small_model()
    x, y = batch(4, seed=4)
    iteration = attack._iteration(model)
    state = State(*(torch.rand(4, 3, 8, 8) if i in (0, 1, 2, 4, 6, 8) else torch.rand(4) for i in range(13)))
    state = state._replace(step=torch.full((4, 1, 1, 1), 0.1), fooled=torch.zeros(4, dtype=torch.bool),
                           halved_last=torch.tensor([True, False, True, False]))
    lists, results = [], []
    for momentum, at_check in ((1.0, False), (0.75, True)):
        with record_ops() as ops:
            results.append(iteration(x, y, torch.tensor(momentum), torch.tensor(at_check), torch.tensor(1.5), *state))
        lists.append(ops)
    assert lists[0] == lists[1]
    plain, checked = results
    # off a checkpoint the step and the last decisions stay; at one, the images it halves get half the step
    assert torch.equal(plain.step, state.step) and torch.equal(plain.halved_last, state.halved_last)
    assert torch.equal(checked.step, torch.where(per_image(checked.halved_last, x), state.step / 2, state.step))
    assert torch.equal(checked.rises, torch.zeros(4)) and not torch.equal(plain.rises, torch.zeros(4))
