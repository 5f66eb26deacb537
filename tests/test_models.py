"""Model plugins: the first-party networks, the timm and torchvision families, and the spec's model and rules."""

from pathlib import Path

import pytest
import torch
from torch import nn

import bionas
from bionas.data import DatasetInfo
from bionas.errors import BionasError, PluginError, SpecError
from bionas.rules import wrappable_layers
from bionas.space import count_parameters
from bionas.spec import load_spec

CIFAR = DatasetInfo(10, 3, 32, (0.5,) * 3, (0.25,) * 3)
MNIST = DatasetInfo(10, 1, 28, (0.1307,), (0.3081,))


def cifar_resnet_parameters(blocks: int, classes: int = 10) -> int:
    """He et al.'s CIFAR ResNet with option A shortcuts, counted by hand: 3x3 convs without bias, BN (2 per
    channel), the linear classifier; the shortcuts have no parameters."""
    total = 3 * 16 * 9 + 2 * 16  # conv1, bn1
    channels = 16
    for width in (16, 32, 64):
        for block in range(blocks):
            in_channels = channels if block == 0 else width
            total += in_channels * width * 9 + width * width * 9 + 2 * (2 * width)
        channels = width
    return total + 64 * classes + classes


@pytest.mark.parametrize(("name", "blocks"), [("resnet20", 3), ("resnet32", 5), ("resnet56", 9)])
def test_cifar_resnets_have_the_papers_depth_and_parameters(name, blocks):
    model = bionas.get_model(name).build(CIFAR)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 6 * blocks + 2  # the paper's depth: 6n convolutions after the first, and fc
    assert count_parameters(model) == cifar_resnet_parameters(blocks)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_option_a_shortcut_subsamples_and_zero_pads_option_b_projects():
    torch.manual_seed(0)
    block = bionas.get_model("resnet20").build(CIFAR).layer2[0]
    x = torch.randn(2, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 4, 4) and not list(block.shortcut.parameters())
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    projected = bionas.get_model("resnet20", shortcut="B").build(CIFAR).layer2[0].shortcut
    assert isinstance(projected[0], nn.Conv2d) and projected[0].stride == (2, 2)


def test_lenet5_is_lecuns_on_mnist_and_takes_channels_and_classes_from_the_data():
    model = bionas.get_model("lenet5").build(MNIST)
    # conv 1->6 5x5, conv 6->16 5x5, conv 16->120 5x5, fc 120->84, fc 84->10, with biases
    by_hand = (6 * 25 + 6) + (6 * 16 * 25 + 16) + (16 * 120 * 25 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert count_parameters(model) == by_hand == 61706
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    cifar100 = bionas.get_model("lenet5").build(DatasetInfo(100, 3, 32, (0.5,) * 3, (0.25,) * 3))
    assert cifar100(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_mlp_names_its_layers_and_follows_its_hidden_option():
    model = bionas.get_model("mlp", hidden=[32, 16]).build(MNIST)
    assert [name for name, _ in wrappable_layers(model)] == ["fc1", "fc2", "classifier"]
    assert (model.fc1.in_features, model.fc2.in_features, model.classifier.out_features) == (784, 32, 10)


def test_family_options_reach_the_library_and_one_channel_images_fit_torchvision():
    timm_model = bionas.get_model("timm/test_resnet", drop_rate=0.25).build(MNIST)
    assert timm_model.drop_rate == 0.25 and timm_model.conv1[0].in_channels == 1
    tv = bionas.get_model("torchvision/mobilenet_v2", width_mult=0.25, dropout=0.3).build(MNIST)
    assert tv.classifier[0].p == 0.3 and tv.classifier[1].out_features == 10
    assert tv(torch.rand(2, 1, 28, 28)).shape == (2, 10)  # gray images repeated to RGB


@pytest.mark.parametrize(("name", "expected"), [
    ("resnet21", "unknown model 'resnet21'. Did you mean: resnet32, resnet20, resnet56? Known models: lenet5, mlp,"
                 " resnet20, resnet32, resnet56, timm/<name>, torchvision/<name>."),
    ("resnet18", "unknown model 'resnet18'. Did you mean: timm/resnet18, torchvision/resnet18?"),
    ("timm/resnet181", "unknown timm model 'resnet181'. Did you mean: timm/resnet18"),
    ("torchvision/resnet181", "unknown torchvision model 'resnet181'. Did you mean: torchvision/resnet18"),
    ("timn/resnet18", "unknown model family 'timn'. Did you mean: timm?"),
    ("timm", "model 'timm' is a family of models: name one, as in 'timm/resnet18'"),
])
def test_unknown_model_names_are_spec_errors_with_suggestions(name, expected):
    with pytest.raises(SpecError) as err:
        load_spec({"name": "t", "dataset": "digits", "model": name})
    assert err.value.errors[0].startswith(f"model.name: {expected}")
    with pytest.raises(PluginError):
        bionas.get_model(name)


@pytest.mark.parametrize(("model", "error"), [
    ({"name": "timm/resnet18", "options": {"pretrained": True}},
     "model.options.pretrained: bionas downloads nothing, so pretrained weights cannot be loaded"),
    ({"name": "torchvision/resnet18", "options": {"weights": "DEFAULT"}},
     "model.options.weights: bionas downloads nothing"),
    ({"name": "timm/resnet18", "options": {"num_classes": 5}}, "model.options.num_classes: set from the data set"),
    ({"name": "timm/resnet18", "options": {"no_such_argument": 1}},
     "model.options: timm/resnet18 cannot be built with these options: TypeError:"),
    ({"name": "resnet20", "options": {"shortcut": "C"}}, "model.options.shortcut: Input should be 'A' or 'B'"),
])
def test_model_options_are_validated_at_their_field_path(model, error):
    with pytest.raises(SpecError) as err:
        load_spec({"name": "t", "dataset": "digits", "model": model})
    assert err.value.errors[0].startswith(error)


def test_pretrained_false_is_allowed_and_first_party_defaults_are_filled_in():
    spec = load_spec({"name": "t", "dataset": "digits", "model": {"name": "timm/resnet18",
                                                                  "options": {"pretrained": False}}})
    assert spec.model.options == {"pretrained": False}
    assert load_spec({"name": "t", "dataset": "digits", "model": "resnet20"}).model.options == {
        "shortcut": "A", "width": 16}


@pytest.mark.parametrize(("changes", "errors"), [
    ({"search": "darts"}, ["model: give either a model or a search, not both"]),
    ({"genotype": "genotype.json"}, ["model: give either a model or a genotype, not both"]),
    ({"retrain": None}, ["retrain: a model run trains the model, so retrain cannot be null"]),
    ({"retrain": {"cells": 3}}, ["retrain.cells: builds a genotype's network, not a model"]),
    ({"model": None, "search": "darts"}, ["rules: rules by glob are for a model's layers"]),
    ({"rules": {"layer9.*": "fa"}}, ["rules['layer9.*']: matches no Conv2d/Linear layer of the model"]),
    ({"rules": {"layer1.*": "fa", "layer1.0.*": "usf"}},
     ["rules['layer1.0.*']: every layer it matches (2, e.g. 'layer1.0.conv1') takes the rule of an earlier glob"]),
    ({"rules": {"layer1.*": "fx"}}, ["rules['layer1.*'].name: unknown rule 'fx'. Did you mean: fa?"]),
])
def test_model_runs_refuse_specs_that_do_not_fit(changes, errors):
    spec = {"name": "t", "dataset": "digits", "model": "resnet20", "rules": {"layer1.*": "fa"}, **changes}
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert len(err.value.errors) == len(errors)
    for line, expected in zip(err.value.errors, errors):
        assert line.startswith(expected), line


def test_a_rule_name_alone_applies_to_every_layer():
    spec = load_spec({"name": "t", "dataset": "digits", "model": "lenet5", "rules": "usf"})
    assert list(spec.rules) == ["*"] and spec.rules["*"].name == "usf"


def test_model_network_rules_by_glob_checked_per_layer():
    from bionas.model_network import ModelChoice, build_model_network, model_config
    from bionas.rules import rule_of

    choice = ModelChoice({"name": "resnet20", "options": {}},
                         {"layer1.*": {"name": "fa", "options": {}}, "fc": {"name": "dfa", "options": {}},
                          "*conv2": {"name": "usf", "options": {}}})
    network = build_model_network(choice, model_config(CIFAR))
    expected = {}
    for name, layer in wrappable_layers(network.net):
        if name.startswith("layer1."):
            expected[name] = "fa"
        elif name == "fc":
            expected[name] = "dfa"
        elif name.endswith("conv2"):
            expected[name] = "usf"
        else:
            expected[name] = None
        rule = rule_of(layer)
        assert (rule.name if rule else None) == expected[name], name
    assert choice.layer_rules(network.net) == expected
    assert expected["conv1"] is None and expected["layer2.0.conv2"] == "usf" and expected["layer1.2.conv2"] == "fa"
    logits = network(torch.rand(4, 3, 32, 32))
    logits.sum().backward()  # dfa on fc gets its output error from the tap convert installed
    assert network.net.fc.weight.grad is not None


def test_a_glob_the_built_model_does_not_match_is_an_error_at_build_time():
    from bionas.model_network import ModelChoice, build_model_network, model_config

    choice = ModelChoice({"name": "mlp", "options": {"hidden": []}}, {"fc1": {"name": "fa", "options": {}}})
    with pytest.raises(BionasError, match=r"rules\['fc1'\] of model mlp: matches no Conv2d/Linear layer"):
        build_model_network(choice, model_config(MNIST))


def test_bionas_search_on_a_model_spec_says_it_has_no_search_stage(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from bionas.cli import build_app

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "dataset": "digits", "model": "mlp"}))
    result = CliRunner().invoke(build_app(), ["search", str(spec), "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 1 and "trains a model: it has no search stage" in result.output
    assert not (tmp_path / "run").exists()


def test_the_model_plugins_and_a_first_party_model_spec_import_neither_timm_nor_torchvision():
    """docs/architecture.md: loading the first-party plugins imports none of timm, torchvision, matplotlib."""
    import subprocess
    import sys

    code = ("import sys; from bionas.registry import get_registry; get_registry().list(); "
            "from bionas.spec import load_spec; load_spec({'name': 't', 'dataset': 'digits', 'model': 'lenet5', "
            "'rules': {'conv*': 'fa'}}); print(sorted(m for m in ('timm', 'torchvision', 'matplotlib') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_spec_of_docs_models_md_is_valid_and_gives_each_layer_the_rule_it_says():
    import yaml

    from bionas.model_network import ModelChoice, build_model_network, model_config

    page = (Path(__file__).parents[1] / "docs" / "models.md").read_text()
    spec = load_spec(yaml.safe_load(page.split("```yaml\n", 1)[1].split("```", 1)[0]))
    choice = ModelChoice.from_spec(spec)
    layers = choice.layer_rules(build_model_network(choice, model_config(CIFAR)).net)
    assert layers["conv1"] is None and layers["fc"] == "fa"  # "conv1 matches no glob: plain backprop"
    assert {layers[n] for n in layers if n.startswith("layer1.")} == {"usf"}
    assert {layers[n] for n in layers if n.startswith(("layer2.", "layer3."))} == {"frsf"}


def test_the_schema_types_rules_by_the_installed_rules():
    from bionas.spec import spec_json_schema

    mapping, name, null = spec_json_schema()["properties"]["rules"]["anyOf"]
    assert "fa" in name["enum"] and null == {"type": "null"}
    assert "fa" in mapping["additionalProperties"]["anyOf"][0]["enum"]
