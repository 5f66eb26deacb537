"""About a hundred bad inputs, each with its nearest valid neighbour.

Every bad input exits non-zero with one error that names the problem and no traceback; its good
neighbour (the same input with the one thing fixed) passes. Most go through `bionas validate`, which
does no work; the others stop before any training (run, train, attack, analyze, plugin loading).
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bionas import registry
from bionas.checkpoint import save_state
from bionas.cli import build_app, main
from bionas.space import BIONAS_DARTS, build_network

runner = CliRunner()
DELETE = object()  # a change that removes the field


def invoke(*args):
    return runner.invoke(build_app(), [str(a) for a in args])


def assert_refused(result, expected: str) -> None:
    output = result.output
    assert result.exit_code != 0, output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"  # CliRunner hides tracebacks
    assert "Traceback" not in output
    assert expected in output, output


def assert_passes(result) -> None:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def changed(spec: dict, changes: dict) -> dict:
    """`spec` with dotted paths set ("retrain.lr": 0) or removed (DELETE)."""
    spec = copy.deepcopy(spec)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return spec


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A genotype file, its broken variants and a valid base spec that retrains it."""
    root = tmp_path_factory.mktemp("bad-inputs")
    BIONAS_DARTS.save(root / "genotype.json")
    (root / "latin1.json").write_bytes('{"normal": "caf\xe9"}'.encode("latin-1"))
    (root / "broken.json").write_text('{"normal": [')
    base = {
        "name": "bad-inputs",
        "dataset": {"name": "digits"},
        "genotype": str(root / "genotype.json"),
        "retrain": {"epochs": 1, "batch_size": 32, "channels": 4, "cells": 2, "auxiliary": False, "cutout": 0},
        "evaluation": {"points": 20, "attacks": [{"name": "fgsm", "eps": [0.1]}]},
    }
    return {"root": root, "base": base}


INLINE = BIONAS_DARTS.to_dict()


def inline_with(cell_edge_change: dict) -> dict:
    genotype = copy.deepcopy(INLINE)
    genotype["normal"][0] = {**genotype["normal"][0], **cell_edge_change}
    return genotype


SEARCH = {"genotype": DELETE, "search": {"name": "random", "options": {"epochs": 1}}}

# (id, bad changes, good changes, what the message names). "{root}" in a string is the fixture's directory.
SPEC_CASES = [
    ("seed-negative", {"seed": -1}, {"seed": 0}, "seed: Input should be greater than or equal to 0"),
    ("seed-text", {"seed": "x"}, {"seed": 3}, "seed: Input should be a valid integer"),
    ("name-space", {"name": "a b"}, {"name": "a-b"}, "name: String should match pattern"),
    ("device-gpu", {"device": "gpu"}, {"device": "cuda:1"}, "device: String should match pattern"),
    ("dataset-missing", {"dataset": DELETE}, {}, "dataset: Field required"),
    ("dataset-typo", {"dataset.name": "digitz"}, {"dataset.name": "digits"}, "Did you mean: digits"),
    ("dataset-unknown-option", {"dataset.options": {"bogus": 1}}, {"dataset.options": {}},
     "dataset.options.bogus: unknown field"),
    ("val-size-negative", {"dataset.options": {"val_size": -1}}, {"dataset.options": {"val_size": 10}},
     "dataset.options.val_size: Input should be greater than or equal to 0"),
    ("val-size-zero-with-retrain", {"dataset.options": {"val_size": 0}}, {"dataset.options": {"val_size": 1}},
     "dataset.options.val_size: 0 leaves no validation split"),
    ("test-size-text", {"dataset.options": {"test_size": "many"}}, {"dataset.options": {"test_size": 100}},
     "dataset.options.test_size"),
    ("augment-padding", {"dataset.options": {"augment": {"padding": -1}}},
     {"dataset.options": {"augment": {"padding": 1}}}, "dataset.options.augment.padding"),
    ("folder-split-outside-root", {"dataset": {"name": "folder", "options": {"splits": {"train": "../x", "test": "t"}}}},
     {"dataset": {"name": "folder", "options": {"splits": {"train": "x", "test": "t"}}}},
     "split directories must lie under root"),
    ("folder-no-val", {"dataset": {"name": "folder", "options": {"val_fraction": 0}}},
     {"dataset": {"name": "folder", "options": {"val_fraction": 0.1}}}, "dataset.options.val_fraction: 0"),
    ("synthetic-image-size", {"dataset": {"name": "synthetic", "options": {"image_size": 2}}},
     {"dataset": {"name": "synthetic", "options": {"image_size": 8}}}, "dataset.options.image_size"),
    ("epochs-zero", {"retrain.epochs": 0}, {"retrain.epochs": 1}, "retrain.epochs: Input should be greater than 0"),
    ("batch-size-zero", {"retrain.batch_size": 0}, {"retrain.batch_size": 8}, "retrain.batch_size"),
    ("lr-zero", {"retrain.lr": 0}, {"retrain.lr": 0.01}, "retrain.lr: Input should be greater than 0"),
    ("lr-min-above-lr", {"retrain.lr_min": 0.1}, {"retrain.lr_min": 0.025}, "lr_min 0.1 is above lr 0.025"),
    ("optimizer-typo", {"retrain.optimizer": "sgdd"}, {"retrain.optimizer": "sgd"},
     "retrain.optimizer: unknown timm optimizer 'sgdd'. Did you mean: sgd"),
    ("optimizer-unknown", {"retrain.optimizer": "adamz"}, {"retrain.optimizer": "lamb"},
     "unknown timm optimizer 'adamz'"),
    ("scheduler-typo", {"retrain.scheduler": "cosin"}, {"retrain.scheduler": "cosine"},
     "retrain.scheduler: unknown timm scheduler 'cosin'. Did you mean: cosine?"),
    ("scheduler-unknown", {"retrain.scheduler": "linear"}, {"retrain.scheduler": "step"},
     "unknown timm scheduler 'linear'"),
    ("momentum-one", {"retrain.momentum": 1.0}, {"retrain.momentum": 0.9}, "retrain.momentum"),
    ("drop-path-one", {"retrain.drop_path": 1.0}, {"retrain.drop_path": 0.0}, "retrain.drop_path"),
    ("label-smoothing-negative", {"retrain.label_smoothing": -0.1}, {"retrain.label_smoothing": 0.1},
     "retrain.label_smoothing"),
    ("grad-clip-zero", {"retrain.grad_clip": 0}, {"retrain.grad_clip": None}, "retrain.grad_clip"),
    ("warmup-negative", {"retrain.warmup_epochs": -1}, {"retrain.warmup_epochs": 0}, "retrain.warmup_epochs"),
    ("retrain-unknown-field", {"retrain.epoch": 3}, {"retrain.epochs": 3}, "retrain.epoch: unknown field"),
    ("retrain-channels-huge", {"retrain.channels": 10**7}, {"retrain.channels": 8},
     "retrain.channels: 10000000 channels need at least"),
    ("section-typo", {"retrian": {}}, {"retrain.epochs": 2}, "retrian: unknown field"),
    ("space-channels-huge", {**SEARCH, "space.channels": 10**7}, {**SEARCH, "space.channels": 8},
     "space.channels: 10000000 channels need at least"),
    ("space-op-typo", {"space.ops": ["skip_conect"]}, {"space.ops": ["skip_connect"]},
     "space.ops[0]: unknown op 'skip_conect'. Did you mean: skip_connect"),
    ("space-op-twice", {"space.ops": ["skip_connect", "skip_connect"]}, {"space.ops": ["skip_connect"]},
     "space.ops[1]: op 'skip_connect' is listed twice"),
    ("space-rule-typo", {"space.rules": ["usff"]}, {"space.rules": ["usf"]}, "Did you mean: usf"),
    ("space-rule-option", {"space.rules": [{"name": "fa", "options": {"bogus": 1}}]},
     {"space.rules": [{"name": "fa"}]}, "space.rules[0].options.bogus: unknown field"),
    ("space-exclude-unlisted-op", {"space.ops": ["skip_connect"], "space.exclude": [["max_pool_3x3", "fa"]]},
     {"space.ops": ["skip_connect", "max_pool_3x3"], "space.exclude": [["max_pool_3x3", "fa"]]},
     "space.exclude[0]: op 'max_pool_3x3' is not in space.ops"),
    ("space-nodes-zero", {"space.nodes": 0}, {"space.nodes": 2}, "space.nodes"),
    ("space-fixed-rule-typo", {"space.fixed_rules.stem": "bpp"}, {"space.fixed_rules.stem": "bp"},
     "space.fixed_rules.stem.name: unknown rule 'bpp'"),
    ("partial-channels", {**SEARCH, "space.partial_channels": 3}, {**SEARCH, "space.partial_channels": 4},
     "not a multiple of partial_channels 3"),
    ("search-typo", {**SEARCH, "search": "rando"}, {**SEARCH, "search": "random"}, "Did you mean: random"),
    ("arch-fraction-one", {**SEARCH, "search.arch_fraction": 1.0}, {**SEARCH, "search.arch_fraction": 0.5},
     "search.arch_fraction"),
    ("search-option-zero", {**SEARCH, "search.options": {"epochs": 0}}, {**SEARCH, "search.options": {"epochs": 1}},
     "search.options.epochs: Input should be greater than 0"),
    ("egnas-start-after-the-end", {"genotype": DELETE, "space.channels": 8, "search": {"name": "egnas",
                                                                                     "options": {"epochs": 5}}},
     {"genotype": DELETE, "space.channels": 8, "search": {"name": "egnas", "options": {"epochs": 5, "start_epoch": 2}}},
     "search.options.start_epoch: 15 is not below epochs (5): the architecture would never be updated"),
    ("darts-warmup-to-the-end", {"genotype": DELETE, "search": {"name": "darts", "options": {"epochs": 2,
                                                                                           "warmup_epochs": 2}}},
     {"genotype": DELETE, "search": {"name": "darts", "options": {"epochs": 2, "warmup_epochs": 1}}},
     "search.options.warmup_epochs: 2 is not below epochs (2)"),
    ("search-and-genotype", {"search": "random"}, {}, "give either a search section or a genotype"),
    ("neither-search-nor-genotype", {"genotype": DELETE}, {"genotype": DELETE, "search": "random"},
     "search: missing"),
    ("genotype-file-missing", {"genotype": "{root}/nothing.json"}, {"genotype": "{root}/genotype.json"},
     "cannot read genotype"),
    ("genotype-not-utf8", {"genotype": "{root}/latin1.json"}, {"genotype": "{root}/genotype.json"}, "not UTF-8"),
    ("genotype-not-json", {"genotype": "{root}/broken.json"}, {"genotype": "{root}/genotype.json"},
     "not valid JSON"),
    ("genotype-inline-op", {"genotype": inline_with({"op": "sep_conv_9x9"})}, {"genotype": INLINE},
     "unknown op 'sep_conv_9x9'"),
    ("genotype-inline-rule", {"genotype": inline_with({"rule": "usff"})}, {"genotype": INLINE}, "Did you mean: usf"),
    ("genotype-inline-no-rule", {"genotype": inline_with({"op": "sep_conv_3x3", "rule": None})},
     {"genotype": inline_with({"op": "sep_conv_3x3", "rule": "fa"})}, "has parameters: give the rule"),
    ("genotype-inline-rule-on-pool", {"genotype": inline_with({"op": "max_pool_3x3", "rule": "fa"})},
     {"genotype": inline_with({"op": "max_pool_3x3", "rule": None})},
     "genotype (spec genotype): normal[0].rule: op 'max_pool_3x3' is parameter-free, so rule 'fa' cannot apply"),
    ("genotype-inline-unused-node", {"genotype": {**INLINE, "normal_concat": [2, 3, 4]}},
     {"genotype": {**INLINE, "normal_concat": [3, 4, 5]}},  # node 2 feeds node 3: the loose ends suffice
     "normal_concat: node 5 is neither in the concat nor the source of a later edge"),
    ("genotype-number", {"genotype": 5}, {"genotype": INLINE}, "genotype"),
    ("retrain-cutout-whole-image", {"retrain.cutout": 8}, {"retrain.cutout": 4},
     "retrain.cutout: 8 is not smaller than the 8x8 images of digits"),
    ("augment-cutout-whole-image", {"dataset.options": {"augment": {"cutout": 9}}},
     {"dataset.options": {"augment": {"cutout": 2}}}, "dataset.options.augment.cutout: 9 is not smaller than the 8x8"),
    ("augment-padding-whole-image", {"dataset.options": {"augment": {"padding": 8}}},
     {"dataset.options": {"augment": {"padding": 2}}}, "dataset.options.augment.padding: 8 is not smaller than the 8x8"),
    ("eps-255-units", {"evaluation.attacks": [{"name": "fgsm", "eps": [8]}]},
     {"evaluation.attacks": [{"name": "fgsm", "eps": ["8/255"]}]}, "did you mean 8/255?"),
    ("eps-option-255-units", {"evaluation.attacks": [{"name": "pgd", "options": {"eps": 8}}]},
     {"evaluation.attacks": [{"name": "pgd", "options": {"eps": "8/255"}}]},
     "evaluation.attacks[0].options.eps: 8 is not a budget in [0, 1] pixel units"),
    ("eps-one", {"evaluation.attacks": [{"name": "square", "options": {"eps": 1}}]},
     {"evaluation.attacks": [{"name": "square", "options": {"eps": 0.05}}]}, "did you mean 1/255?"),
    ("eps-on-onepixel", {"evaluation.attacks": [{"name": "onepixel", "eps": [0.1]}]},
     {"evaluation.attacks": [{"name": "onepixel", "options": {"pixels": 2}}]},
     "evaluation.attacks[0].eps: attack 'onepixel' has no eps budget"),
    ("eps-bad-fraction", {"evaluation.attacks": [{"name": "fgsm", "eps": ["8/0"]}]},
     {"evaluation.attacks": [{"name": "fgsm", "eps": ["8/255"]}]}, "expected a number or a fraction"),
    ("attack-typo", {"evaluation.attacks": ["pgdd"]}, {"evaluation.attacks": ["pgd"]}, "Did you mean: pgd"),
    ("attack-steps-zero", {"evaluation.attacks": [{"name": "pgd", "options": {"steps": 0}}]},
     {"evaluation.attacks": [{"name": "pgd", "options": {"steps": 1}}]}, "evaluation.attacks[0].options.steps"),
    ("attack-norm", {"evaluation.attacks": [{"name": "pgd", "options": {"norm": "l3"}}]},
     {"evaluation.attacks": [{"name": "pgd", "options": {"norm": "l2", "eps": 1.5}}]},
     "evaluation.attacks[0].options.norm"),
    ("attacks-without-retrain", {"retrain": None}, {"retrain": None, "evaluation.attacks": []},
     "evaluation.attacks: the attacks run on the retrained network, and retrain is null"),
    ("points-zero", {"evaluation.points": 0}, {"evaluation.points": None}, "evaluation.points"),
    ("eval-batch-zero", {"evaluation.batch_size": 0}, {"evaluation.batch_size": 8}, "evaluation.batch_size"),
    ("amp-fp16", {"runtime.amp": "fp16"}, {"runtime.amp": "bf16"}, "runtime.amp"),
    ("workers-negative", {"runtime.workers": -1}, {"runtime.workers": 0}, "runtime.workers"),
    ("output-dir-unknown-field", {"output.dir": "runs/{nme}"}, {"output.dir": "runs/{name}"},
     "output.dir: {nme} is not a field of a run directory"),
    ("output-dir-conversion", {"output.dir": "runs/{name!r}"}, {"output.dir": "runs/name-r"},
     "output.dir: {name!r} is not a field"),
    ("output-dir-attribute", {"output.dir": "runs/{name.__class__}"}, {"output.dir": "runs/{name}/x"},
     "{name.__class__} is not a field"),
    ("output-dir-index", {"output.dir": "runs/{0}"}, {"output.dir": "runs/0"}, "{0} is not a field"),
    ("output-dir-brace", {"output.dir": "runs/{name"}, {"output.dir": "runs/name"}, "an unmatched brace"),
]


@pytest.mark.parametrize("bad, good, expected", [case[1:] for case in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_validate_refuses_a_bad_spec_and_passes_its_neighbour(files, tmp_path, bad, good, expected):
    def write(changes):
        text = json.dumps(changed(files["base"], changes)).replace("{root}", str(files["root"]))
        (tmp_path / "spec.json").write_text(text)
        return tmp_path / "spec.json"

    assert_refused(invoke("validate", write(bad)), expected)
    assert_passes(invoke("validate", write(good)))


def test_a_rule_on_an_identity_is_a_warning_not_an_error(files, tmp_path):
    """The paper's genotype as published names frsf on skip_connects of the normal cell (identities):
    validate accepts it, and says the rule is read as null."""
    published = inline_with({"rule": "frsf"})  # normal[0]: skip_connect from node 0
    (tmp_path / "spec.json").write_text(json.dumps(changed(files["base"], {"genotype": published})))
    result = invoke("validate", tmp_path / "spec.json")
    assert_passes(result)
    assert "warning: genotype (spec genotype): normal[0].rule: skip_connect at stride 1 (every edge of a normal " \
           "cell) has no weights, so rule 'frsf' cannot apply: read as null" in " ".join(result.output.split())
    assert result.stdout.strip().endswith("valid")


VALID_YAML = "name: x\ndataset: digits\nsearch: random\nretrain:\n  epochs: 1\n  lr: 0.1\n"

# (id, file name, bad bytes, good bytes, what the message names)
FILE_CASES = [
    ("yaml-syntax", "s.yaml", b"name: [x\n", VALID_YAML.encode(), "not valid YAML"),
    ("yaml-duplicate-key", "s.yaml", (VALID_YAML + "name: y\n").encode(), VALID_YAML.encode(),
     "key 'name' is given twice, on lines 1 and 7"),
    ("yaml-duplicate-nested-key", "s.yaml", (VALID_YAML + "  epochs: 2\n").encode(), VALID_YAML.encode(),
     "key 'epochs' is given twice, on lines 5 and 7"),
    ("yaml-python-tag", "s.yaml", (VALID_YAML + "seed: !!python/object/apply:os.getpid []\n").encode(),
     (VALID_YAML + "seed: 4\n").encode(), "not valid YAML"),
    ("json-duplicate-key", "s.json", b'{"name": "x", "name": "y", "dataset": "digits", "search": "random"}',
     b'{"name": "x", "dataset": "digits", "search": "random"}', "key 'name' is given twice"),
    ("json-syntax", "s.json", b'{"name": "x",', b'{"name": "x", "dataset": "digits", "search": "random"}',
     "not valid JSON"),
    ("top-level-list", "s.yaml", b"- name: x\n", VALID_YAML.encode(), "the top level must be a mapping"),
    ("empty-file", "s.yaml", b"", VALID_YAML.encode(), "the top level must be a mapping"),
    ("not-utf8", "s.yaml", "name: caf\xe9\n".encode("latin-1"), VALID_YAML.encode(), "not UTF-8 text"),
]


@pytest.mark.parametrize("name, bad, good, expected", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_validate_refuses_a_bad_spec_file(tmp_path, name, bad, good, expected):
    path = tmp_path / name
    path.write_bytes(bad)
    assert_refused(invoke("validate", path), expected)
    path.write_bytes(good)
    assert_passes(invoke("validate", path))


def test_validate_refuses_a_missing_spec_file(tmp_path):
    assert_refused(invoke("validate", tmp_path / "nothing.yaml"), "file not found")


# -- run and train: refused before any work -------------------------------------------------------


@pytest.fixture
def spec_file(files, tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**files["base"], "evaluation": {"attacks": []}}))
    return path


def test_run_refuses_an_out_that_is_a_file(spec_file, tmp_path):
    (tmp_path / "a-file").write_text("mine\n")
    assert_refused(invoke("run", spec_file, "--out", tmp_path / "a-file", "--quiet"), "is a file, not a directory")
    assert (tmp_path / "a-file").read_text() == "mine\n"


def test_run_resume_refuses_a_directory_that_holds_no_run(spec_file, tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "results.json").write_text("mine\n")
    assert_refused(invoke("run", spec_file, "--out", other, "--resume", "--quiet"), "holds no bionas run")
    assert [p.name for p in other.iterdir()] == ["results.json"] and (other / "results.json").read_text() == "mine\n"


def test_run_refuses_a_used_directory_without_resume(spec_file, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "resolved_spec.json").write_text("{}\n")
    assert_refused(invoke("run", spec_file, "--out", used, "--quiet"), "already holds a run; continue it with --resume")


def test_run_refuses_a_bad_device_option(spec_file, tmp_path):
    assert_refused(invoke("run", spec_file, "--out", tmp_path / "r", "--device", "tpu"), "device")


def test_resume_refuses_a_corrupted_stages_file(spec_file, tmp_path):
    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "stages.json").write_text('{"retrain": {"hash": ')
    assert_refused(invoke("run", spec_file, "--out", run_dir, "--resume", "--quiet"), "stages.json is corrupted")


@pytest.mark.parametrize("name, expected", [("nothing.json", "cannot read genotype"), ("latin1.json", "not UTF-8"),
                                            ("broken.json", "not valid JSON")])
def test_train_refuses_a_bad_genotype_file(files, spec_file, tmp_path, name, expected):
    assert_refused(invoke("train", spec_file, "--genotype", files["root"] / name, "--out", tmp_path / "r"), expected)
    assert not (tmp_path / "r").exists()  # refused before the run directory was made


# -- attack and analyze on run directories ------------------------------------------------------


def save_model(path, dataset: dict, in_channels: int = 3, image_size: int = 32) -> None:
    """A tiny untrained network file as a run writes it (model.safetensors)."""
    config = {"channels": 4, "cells": 2, "num_classes": 10, "in_channels": in_channels,
              "mean": [0.5] * in_channels, "std": [0.25] * in_channels, "auxiliary": False,
              "image_size": image_size, "stem_multiplier": 1}
    torch.manual_seed(0)
    network = build_network(BIONAS_DARTS, config)
    save_state(path, {"model": network.state_dict()},
               {"genotype": BIONAS_DARTS.to_dict(), "network": config, "run": "r", "dataset": dataset})


def write_cifar10(root, payload=None) -> None:
    """cifar-10-batches-py/ with 10 images per file; `payload` replaces the first training batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        entry = {"labels": list(range(10)), "data": rng.integers(0, 256, (10, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    if payload is not None:
        (folder / "data_batch_1").write_bytes(payload)


class RunsCode:
    """A pickle that calls os.system when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run directories recording: digits; cifar10 at a root holding a malicious pickle; cifar10 at a good root."""
    root = tmp_path_factory.mktemp("runs")
    write_cifar10(root / "good-data")
    marker = root / "code-ran"
    write_cifar10(root / "evil-data", payload=pickle.dumps({"data": RunsCode(marker), "labels": []}, protocol=2))
    made = {"root": root, "marker": marker}
    for name, dataset, channels, size in [
        ("digits", {"name": "digits", "options": {}}, 1, 8),
        ("evil", {"name": "cifar10", "options": {"root": str(root / "evil-data"), "val_size": 5}}, 3, 32),
        ("good", {"name": "cifar10", "options": {"root": str(root / "good-data"), "val_size": 5}}, 3, 32),
    ]:
        run_dir = root / name
        run_dir.mkdir()
        save_model(run_dir / "model.safetensors", dataset, channels, size)
        spec = {"name": name, "dataset": dataset, "genotype": str(root / "elsewhere.json"),
                "retrain": {"epochs": 1, "channels": 4, "cells": 2, "auxiliary": False}}
        (run_dir / "resolved_spec.json").write_text(json.dumps(spec))
        (run_dir / "provenance.json").write_text(json.dumps({"python": "3", "torch": "2", "bionas": "0"}))
        made[name] = run_dir
    return made


ATTACK_CASES = [
    ("no-network", ["attack", "{root}/nothing", "--attack", "fgsm"], "no trained network at"),
    ("attack-typo", ["attack", "{good}", "--attack", "fgsmm", "--data-root", "{root}/good-data"],
     "Did you mean: fgsm"),
    ("eps-255-units", ["attack", "{good}", "--attack", "fgsm", "--eps", "8", "--data-root", "{root}/good-data"],
     "did you mean 8/255?"),
    ("eps-on-onepixel", ["attack", "{good}", "--attack", "onepixel", "--eps", "0.1", "--data-root",
                         "{root}/good-data"], "no attack given has an eps budget"),
    ("eps-text", ["attack", "{good}", "--attack", "fgsm", "--eps", "abc", "--data-root", "{root}/good-data"],
     "expected a number or a fraction like 8/255"),
    ("recorded-root", ["attack", "{good}", "--attack", "fgsm"], "names the location of its data"),
    ("root-and-trust", ["attack", "{good}", "--attack", "fgsm", "--data-root", "{root}/good-data",
                        "--trust-run-data"], "give --data-root or --trust-run-data, not both"),
    ("data-root-for-builtin", ["attack", "{digits}", "--attack", "fgsm", "--data-root", "{root}"],
     "reads no data files"),
    ("data-root-empty", ["attack", "{good}", "--attack", "fgsm", "--data-root", "{root}/nothing"],
     "expected files"),
    ("malicious-pickle-trusted", ["attack", "{evil}", "--attack", "fgsm", "--trust-run-data"],
     "refers to posix.system"),
    ("malicious-pickle-by-root", ["attack", "{good}", "--attack", "fgsm", "--data-root", "{root}/evil-data"],
     "which a data file never needs"),
    ("points-negative", ["attack", "{good}", "--attack", "fgsm", "--points", "-1"], "--points"),
    ("analyze-not-a-run", ["analyze", "gradvar", "{root}/good-data"], "is not a bionas run directory"),
    ("analyze-recorded-root", ["analyze", "gradvar", "{good}"], "names the location of its data"),
    ("analyze-malicious-pickle", ["analyze", "gradvar", "{evil}", "--trust-run-data"], "refers to posix.system"),
    ("analyze-no-alignment", ["analyze", "alignment", "{digits}"], "holds no alignment records"),
    ("analyze-batches-one", ["analyze", "gradvar", "{digits}", "--batches", "1"], "--batches"),
    ("analyze-shard-past-its-count", ["analyze", "random-architectures", "{digits}", "--shard", "2/2"],
     "--shard: '2/2' is not i/n"),
    ("analyze-random-recorded-root", ["analyze", "random-architectures", "{good}"], "names the location of its data"),
]


@pytest.mark.parametrize("args, expected", [c[1:] for c in ATTACK_CASES], ids=[c[0] for c in ATTACK_CASES])
def test_attack_and_analyze_refuse_bad_inputs(runs, args, expected):
    args = [a.format(**{k: v for k, v in runs.items() if k != "marker"}) for a in args]
    assert_refused(invoke(*args), expected)
    assert not runs["marker"].exists()  # no code of a data file ran


def test_attack_neighbours_pass(runs, tmp_path):
    """The good neighbours of the attack cases: the data location named, a budget in pixel units."""
    good = runs["good"]
    for extra in (["--data-root", runs["root"] / "good-data", "--eps", "8/255"], ["--trust-run-data"]):
        assert_passes(invoke("attack", good, "--attack", "fgsm", "--points", "10", "--out", tmp_path, *extra))
    assert_passes(invoke("attack", runs["digits"], "--attack", "onepixel", "--points", "5", "--out", tmp_path))
    assert json.loads((tmp_path / "robustness.json").read_text())["rows"]


def test_analyze_neighbours_pass(runs):
    """The good neighbours of the analyze cases: the data location named, two batches."""
    small = ["--batches", "2", "--batch-size", "4", "--device", "cpu"]
    assert_passes(invoke("analyze", "gradvar", runs["good"], "--data-root", runs["root"] / "good-data", *small))
    assert_passes(invoke("analyze", "gradvar", runs["digits"], *small))
    assert (runs["digits"] / "analysis" / "gradvar.json").exists()


# -- plugin loading --------------------------------------------------------------------------------


def run_main(argv, monkeypatch, capsys) -> tuple[int, str]:
    """`bionas ARGV` through the console-script entry point, in this process: (exit code, output)."""
    monkeypatch.setattr(sys, "argv", ["bionas", *argv])
    registry.reset()
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


BROKEN_PLUGINS = [
    ("sys-exit", "import sys\nsys.exit(3)\n", "SystemExit"),
    ("keyboard-interrupt", "raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ("import-error", "raise ImportError('missing libfoo')\n", "missing libfoo"),
    ("syntax-error", "def (:\n", "SyntaxError"),
]


@pytest.mark.parametrize("source, expected", [c[1:] for c in BROKEN_PLUGINS], ids=[c[0] for c in BROKEN_PLUGINS])
def test_a_broken_plugin_is_isolated_and_strict_mode_refuses_it(make_distribution, monkeypatch, capsys,
                                                               source, expected):
    make_distribution("broken-dist", {"broken_mod": source}, {"broken": "broken_mod"})
    code, output = run_main(["plugins", "list", "--kind", "rule"], monkeypatch, capsys)
    assert code == 0 and "broken-dist" in output and expected in output and "usf" in output  # the others work
    monkeypatch.setenv(registry.STRICT_ENV, "1")
    code, output = run_main(["plugins", "list"], monkeypatch, capsys)
    assert code != 0 and expected in output and "Traceback" not in output
    code, output = run_main(["--version"], monkeypatch, capsys)  # the version needs no plugin
    assert code == 0 and output.startswith("bionas ")
    monkeypatch.setenv(registry.DISABLE_ENV, "broken")  # the good neighbour: the broken plugin disabled
    code, output = run_main(["plugins", "list"], monkeypatch, capsys)
    assert code == 0 and "broken" not in output


def test_a_misspelled_disabled_plugin_is_a_warning(monkeypatch, capsys):
    monkeypatch.setenv(registry.DISABLE_ENV, "bionas_attack")
    code, output = run_main(["plugins", "list", "--kind", "attack"], monkeypatch, capsys)
    assert code == 0 and "warning" in output and "Did you mean: bionas_attacks" in output and "It disables nothing" in output
    monkeypatch.setenv(registry.DISABLE_ENV, "bionas_attacks")
    code, output = run_main(["plugins", "list", "--kind", "attack"], monkeypatch, capsys)
    assert code == 0 and "warning" not in output and "pgd" not in output


def test_an_unknown_plugin_kind_is_refused(monkeypatch, capsys):
    code, output = run_main(["plugins", "list", "--kind", "atack"], monkeypatch, capsys)
    assert code == 2 and "Did you mean: attack" in output and "Traceback" not in output


def test_the_timm_names_validate_accepts_are_timm_names():
    """validate checks optimizer and scheduler names without a retrain: each name it accepts builds in timm."""
    from timm.optim import create_optimizer_v2, list_optimizers
    from timm.scheduler import create_scheduler_v2

    from bionas.spec import COMMON_OPTIMIZERS, TIMM_SCHEDULERS

    assert set(COMMON_OPTIMIZERS) <= set(list_optimizers())
    optimizer = create_optimizer_v2(torch.nn.Linear(2, 2), opt="sgd", lr=0.1)
    for name in TIMM_SCHEDULERS:
        scheduler, _ = create_scheduler_v2(optimizer, sched=name, num_epochs=3)
        assert scheduler is not None, name
    with pytest.raises(ValueError, match="linear"):  # what validate refuses before any work
        create_scheduler_v2(optimizer, sched="linear", num_epochs=3)
