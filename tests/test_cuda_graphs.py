"""runtime.cuda_graphs on a GPU: replayed steps compute what eager steps compute (docs/scaling.md).

Each comparison runs the same graph-ready code twice from the same start: once replayed from CUDA graphs,
once with bionas.graphs.CudaBackend replaced by one that calls the step again where it would replay (so the
optimizers, tensor learning rates and drop-path probability are the same, only the capture differs), and
compares weights, alphas, BatchNorm statistics and rule buffers (every state_dict entry) to bf16 tolerance.
Skipped without CUDA: CI has no GPU; tests/test_step_graphs.py and test_retrain_graphs.py show on the CPU
what a CPU can.
"""

import contextlib

import pytest
import torch

import bionas
import bionas.graphs
import bionas.search.epochs
from bionas.checkpoint import Checkpointer
from bionas.retrain import retrain
from bionas.space import BIONAS_DARTS, Network
from bionas.spec import RetrainSpec
from search_support import Killed, make_supernet, mnist, tiny_data  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")

CUDA = torch.device("cuda")
BF16 = {"rtol": 1.6e-2, "atol": 1e-3}  # bf16's epsilon (2^-7 = 0.0078) with room for a few roundings


class CallAgain:
    """Stands for CudaBackend: the 'capture' runs the step (the capturing call's), each later 'replay' runs it
    again on the static inputs and writes the results into the captured outputs."""

    def __init__(self, generators=()):
        pass

    def warm_up(self, fn, inputs):
        return fn(*inputs)

    def capture(self, fn, inputs, pool):
        outputs = fn(*inputs)
        captured = [True]  # the replay right after the capture: its step already ran

        def replay():
            if captured.pop() if captured else False:
                return
            new = fn(*inputs)
            for static, value in zip(torch.utils._pytree.tree_leaves(outputs), torch.utils._pytree.tree_leaves(new)):
                static.copy_(value)

        return replay, outputs

    def replay(self, graph):
        graph()


@pytest.fixture
def counted(monkeypatch):
    """Every StepGraph made, to check that steps were replayed."""
    made = []
    original = bionas.graphs.StepGraph.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(bionas.graphs.StepGraph, "__init__", init)
    return made


def assert_same_state(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in got:
        if got[name].is_floating_point():
            torch.testing.assert_close(got[name].float(), want[name].float(), **BF16, msg=name)
        else:
            assert torch.equal(got[name], want[name]), name


def test_a_replay_draws_new_random_numbers_and_reads_the_learning_rate_tensor():
    lr = torch.tensor(1.0, device=CUDA)
    step = bionas.graphs.StepGraph(lambda x: (x * lr + torch.rand_like(x),), True, warmup=1)
    ones = torch.ones(1000, device=CUDA)
    step(ones)  # warm-up
    first = step(ones)[0].clone()  # capture, replay
    second = step(ones)[0].clone()
    assert step.replays == 2 and not torch.equal(first, second)  # the default generator advances per replay
    lr.fill_(3.0)  # as LearningRates.update does
    noise = step(ones)[0] - 3.0
    assert ((noise >= 0) & (noise < 1)).all() and not torch.equal(noise, second - 1.0)


@contextlib.contextmanager
def eager_backend(replay: bool):
    """Without `replay`: CudaBackend replaced by CallAgain inside the block."""
    with pytest.MonkeyPatch.context() as patch:
        if not replay:
            patch.setattr(bionas.graphs, "CudaBackend", CallAgain)
            patch.setattr(bionas.search.epochs, "CudaBackend", CallAgain)  # a search run's graphs share one
        yield


def search(name: str, dataset, options: dict, replay: bool, checkpoint=None, kill_at=None, rules=("usf", "fa")):
    strategy = bionas.get_search(name, **options)
    supernet = make_supernet(strategy, dataset, rules=list(rules))

    def log(record):
        if record["epoch"] == kill_at:
            raise Killed

    runtime = bionas.Runtime(device=CUDA, cuda_graphs=True, quiet=True, log=log)
    with eager_backend(replay):
        result = strategy.search(supernet, tiny_data(dataset, 96), runtime, checkpoint)
    return result, supernet


STRATEGIES = {
    "darts": {"epochs": 2, "batch_size": 8},
    "egnas": {"epochs": 2, "batch_size": 8, "start_epoch": 1, "population": 4, "samplings": 1, "fitness_batch_size": 8},
    "random": {"epochs": 2, "batch_size": 8, "samples": 3, "eval_batches": 1, "top_k": 2},
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_replayed_search_steps_give_the_numbers_of_eager_ones(mnist, name, counted):
    _, eager = search(name, mnist, STRATEGIES[name], False)
    counted.clear()
    _, replayed = search(name, mnist, STRATEGIES[name], True)
    assert_same_state(replayed.state_dict(), eager.state_dict())
    assert sum(graph.replays for graph in counted) >= 6  # random: its scoring (its weight step is eager)
    if name != "darts":  # egnas's population scoring, random's sample scoring: mixing weights as static inputs
        assert any(len(graph._static_inputs) == 4 and graph.replays > 0 for graph in counted)


@pytest.mark.parametrize("name", ["egnas", "random"])
def test_replayed_scoring_at_given_mixing_weights_gives_the_eager_scores(mnist, name):
    """What the masked scoring passes decide: EG-NAS's winner and its accuracy, random search's selection."""
    eager, _ = search(name, mnist, STRATEGIES[name], False)
    replayed, _ = search(name, mnist, STRATEGIES[name], True)
    for got, want in zip(replayed.history, eager.history):
        assert got["valid_loss"] == pytest.approx(want["valid_loss"], rel=BF16["rtol"])
        if name == "egnas" and want["evolution"] is not None:
            assert got["evolution"]["sampling"] == want["evolution"]["sampling"]
            assert got["evolution"]["best_fitness"] == pytest.approx(want["evolution"]["best_fitness"], rel=BF16["rtol"])
    if name == "random":
        got, want = replayed.history[-1]["selection"], eager.history[-1]["selection"]
        assert got["valid_loss"] == pytest.approx(want["valid_loss"], rel=BF16["rtol"])


def test_replayed_brsf_search_steps_give_the_numbers_of_eager_ones(mnist, counted):
    _, eager = search("darts", mnist, STRATEGIES["darts"], False, rules=("brsf", "fa"))
    _, replayed = search("darts", mnist, STRATEGIES["darts"], True, rules=("brsf", "fa"))
    assert_same_state(replayed.state_dict(), eager.state_dict())
    assert sum(graph.replays for graph in counted) >= 6


def test_a_search_resumed_between_replays_continues_the_same(mnist, tmp_path):
    options = STRATEGIES["darts"]
    _, whole = search("darts", mnist, options, True)
    checkpoint = Checkpointer(tmp_path / "search.safetensors", "search")
    with pytest.raises(Killed):
        search("darts", mnist, options, True, checkpoint, kill_at=1)
    _, resumed = search("darts", mnist, options, True, checkpoint)
    assert_same_state(resumed.state_dict(), whole.state_dict())


def train(replay: bool, tmp_path, checkpoint=None, kill_at=None):
    torch.manual_seed(0)
    model = Network(BIONAS_DARTS, channels=4, cells=3, num_classes=10, in_channels=1, auxiliary=True, image_size=8)
    recipe = RetrainSpec(epochs=3, batch_size=32, drop_path=0.2, auxiliary=True, cutout=0)

    def log(record):
        if record["epoch"] == kill_at:
            raise Killed

    runtime = bionas.Runtime(device=CUDA, cuda_graphs=True, quiet=True, log=log)
    with eager_backend(replay):
        retrain(model, bionas.get_dataset("digits"), recipe, runtime, seed=0,
                best_path=tmp_path / "best.safetensors", checkpoint=checkpoint)
    return model


def test_replayed_retrain_steps_give_the_numbers_of_eager_ones(tmp_path, counted):
    eager = train(False, tmp_path)
    counted.clear()
    replayed = train(True, tmp_path)
    assert_same_state(replayed.state_dict(), eager.state_dict())
    assert counted[0].captured and counted[0].replays > 0  # the training step

    checkpoint = Checkpointer(tmp_path / "retrain.safetensors", "retrain")
    with pytest.raises(Killed):
        train(True, tmp_path, checkpoint, kill_at=1)
    resumed = train(True, tmp_path, checkpoint)
    assert_same_state(resumed.state_dict(), replayed.state_dict())


@pytest.mark.parametrize("name,options", [("pgd", {"steps": 10}), ("apgd", {"steps": 20})])
def test_replayed_attack_iterations_give_the_eager_adversarial_accuracy(name, options, counted):
    """PGD's and APGD's iterations captured for real, the attacked batches padded to the evaluation's batch:
    the robust accuracy of the eager evaluation, up to points whose gradient sign flips on a near-zero
    component (the padded batch's kernels sum in another order): at most 3 of 96."""
    from bionas.robustness import evaluate_robustness
    from test_attack_graphs import batch, small_model

    model, (x, y) = small_model().to(CUDA), batch(96, seed=5)
    x, y = x.to(CUDA), y.to(CUDA)
    y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10  # a third wrong when clean: the attacked batches are short and padded
    attack = bionas.get_attack(name, **options)
    reports = []
    for graphs in (False, True):
        counted.clear()  # the eager run's StepGraphs are made too, disabled
        reports.append(evaluate_robustness(model, x, y, [attack], ["2/255", "8/255"], batch_size=32,
                                           cuda_graphs=graphs))
    for eager, replayed in zip(reports[0].rows, reports[1].rows):
        assert abs(eager.robust_accuracy - replayed.robust_accuracy) <= 3 / 96
    assert counted and all(step.captured and step.replays > 0 for step in counted)
