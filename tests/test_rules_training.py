"""Rules in whole networks: every rule at once trains on real MNIST, checkpoints restore the next
step exactly, and convert() works on timm and torchvision models."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bionas
from torch_threads import one_torch_thread  # noqa: F401  (autouse)
from bionas.rules import exact_gradients, rule_of


def every_rule_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2),  # 0  hebbian
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),  # 3  fa
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()),  # 6  pc
        nn.Conv2d(16, 16, 3, padding=1, groups=4),  # 7  usf
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 3 * 3, 64),  # 11 brsf
        nn.ReLU(),
        nn.Linear(64, 64),  # 13 dfa
        nn.ReLU(),
        nn.Linear(64, 64),  # 15 frsf
        nn.ReLU(),
        nn.Linear(64, 10),  # 17 bp (unmatched)
    )


def every_rule() -> dict:
    return {
        "0": "hebbian",
        "3": "fa",
        "6": bionas.get_rule("pc", T=3, eta=0.5),
        "7": "usf",
        "11": "brsf",
        "13": "dfa",
        "15": "frsf",
    }


def test_a_network_using_every_rule_trains_and_restores_its_next_step_exactly(mnist_tensors):
    images, labels = mnist_tensors
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(labels), generator=generator)[:1536]
    x, y = images[order], labels[order]
    torch.manual_seed(0)
    model = bionas.convert(every_rule_net(), every_rule())
    assert {rule_of(m).name for m in model.modules() if rule_of(m)} == {
        "hebbian", "fa", "pc", "usf", "brsf", "frsf", "dfa"
    }
    assert rule_of(model[17]) is None  # bp
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def step(net, optimizer, batch):
        optimizer.zero_grad()
        loss = F.cross_entropy(net(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
        return loss.item()

    batches = torch.arange(len(y)).split(64)
    losses = [step(model, opt, b) for _ in range(3) for b in batches]
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.6 * first, (first, last)

    # state_dict round trip: a freshly built and converted model (other feedback draws) that
    # loads the checkpoint takes the identical next step
    state, opt_state = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    torch.manual_seed(123)
    other = bionas.convert(every_rule_net(), every_rule())
    other.load_state_dict(state)
    other_opt = torch.optim.Adam(other.parameters(), lr=2e-3)
    other_opt.load_state_dict(opt_state)
    batch = batches[3]
    assert step(model, opt, batch) == step(other, other_opt, batch)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_network_mixing_dfa_with_other_rules_trains(mnist_tensors):
    images, labels = mnist_tensors
    x, y = images[:1024].flatten(1), labels[:1024]
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(784, 128), nn.Tanh(), nn.Linear(128, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    )
    bionas.convert(model, {"0": "dfa", "2": "fa", "4": "dfa"})  # output layer: bp
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(3):
        for batch in torch.randperm(1024).split(64):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def resnet_mapping() -> dict:
    return {
        "conv1": "fa",
        "layer1*": "usf",
        "layer2*": "brsf",
        "layer3.0": bionas.get_rule("pc", T=2, eta=1.0),
        "layer3.1*": "frsf",
        "layer4*": bionas.get_rule("hebbian", error="pass"),
        "fc": "dfa",
    }


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_convert_works_on_timm_and_torchvision_resnet18(source):
    torch.manual_seed(2)
    if source == "timm":
        timm = pytest.importorskip("timm")
        original = timm.create_model("resnet18", pretrained=False, num_classes=10)
    else:
        torchvision = pytest.importorskip("torchvision")
        original = torchvision.models.resnet18(weights=None, num_classes=10)
    model = bionas.convert(copy.deepcopy(original), resnet_mapping())
    assert isinstance(model.conv1, nn.Conv2d) and rule_of(model.layer3[0]).name == "pc"
    assert set(original.state_dict()) <= set(model.state_dict())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    model.eval(), original.eval()
    assert torch.equal(model(x), original(x))
    model.train()
    F.cross_entropy(model(x), torch.tensor([1, 7])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    with exact_gradients(model):
        x.grad = None
        F.cross_entropy(model(x), torch.tensor([1, 7])).backward()
        exact = x.grad.clone()
    original.train()
    x.grad = None
    F.cross_entropy(original(x), torch.tensor([1, 7])).backward()
    torch.testing.assert_close(exact, x.grad)
