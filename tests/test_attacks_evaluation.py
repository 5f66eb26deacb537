"""Robustness evaluation: counting over all points, sweeps, seeds, masking flags, report files, CLI."""

import json

import pytest
import torch
from attack_models import OnePixelModel, mlp, shuffled, train
from pydantic import Field
from typer.testing import CliRunner

import bionas
from bionas import robustness
from bionas.attacks import RULE_GRADIENT_NOTE, AttackError
from bionas.cli import build_app
from bionas.robustness import RobustnessRow, Target, evaluate_robustness, format_eps, masking_flags
from bionas.spec import Fractional


class NudgeAttack(bionas.Attack):
    """Moves pixel (0, 0) by eps towards 0.5: fools OnePixelModel exactly where that pixel is within eps of 0.5."""

    name = "nudge"
    description = "Test attack."

    class Options(bionas.PluginOptions):
        eps: Fractional = Field(default=0.1, description="Budget.")
        cheat: bool = Field(default=False, description="Leave the budget.")

    def perturb(self, model, images, labels, generator):
        step = self.options.eps * (3 if self.options.cheat else 1)
        adv = images.clone()
        adv[:, 0, 0, 0] = torch.where(images[:, 0, 0, 0] < 0.5, images[:, 0, 0, 0] + step, images[:, 0, 0, 0] - step)
        return adv.clamp(0, 1), torch.ones(len(images))


def nudge_data():
    values = torch.tensor([0.1, 0.45, 0.55, 0.9, 0.48, 0.2])
    images = torch.full((6, 1, 2, 2), 0.3)
    images[:, 0, 0, 0] = values
    labels = torch.tensor([0, 0, 1, 1, 1, 1])  # the last two are wrong when clean
    return images, labels


def test_robust_accuracy_counts_over_all_points_and_never_credits_clean_errors():
    images, labels = nudge_data()
    report = evaluate_robustness(OnePixelModel(0, 0), images, labels, [NudgeAttack()], eps_sweep=[0.1], batch_size=4)
    [row] = report.rows
    assert report.clean_accuracy == pytest.approx(4 / 6) and row.clean_accuracy == report.clean_accuracy
    # Points 1 and 2 are fooled; point 4 (0.48, labelled 1) would be "correct" after the nudge,
    # but it was wrong when clean: it is not robust and is never attacked.
    assert row.robust_accuracy == pytest.approx(2 / 6)
    assert row.success_rate == pytest.approx(2 / 4)
    assert (row.points, row.attacked, row.work, row.eps_label) == (6, 4, 1.0, "0.1")


def test_an_attack_leaving_its_budget_is_an_error_not_a_number():
    images, labels = nudge_data()
    with pytest.raises(AttackError, match="left its budget"):
        evaluate_robustness(OnePixelModel(0, 0), images, labels, [NudgeAttack(cheat=True)])


@pytest.fixture(scope="module")
def setup(mnist_tensors):
    images, labels = shuffled(*mnist_tensors)
    model = train(mlp(hidden=32), images[:1000], labels[:1000], steps=150)
    return model, images[4000:4100], labels[4000:4100]


SWEEP = ["2/255", "0.1"]


def test_sweeps_rows_and_repeatability(setup):
    model, x, y = setup
    attacks = ["fgsm", ("pgd", {"steps": 5}), {"name": "square", "options": {"queries": 30}, "eps": ["0.1"]}]
    first = evaluate_robustness(model, x, y, attacks, eps_sweep=SWEEP, points=60, batch_size=25, seed=1)
    labels = [(r.attack, r.eps_label) for r in first.rows]
    assert labels == [("fgsm", "2/255"), ("fgsm", "0.1"), ("pgd", "2/255"), ("pgd", "0.1"), ("square", "0.1")]
    assert all(r.points == 60 for r in first.rows)
    assert [r.work for r in first.rows][:4] == [1.0, 1.0, 5.0, 5.0] and first.rows[4].work_unit == "queries"
    again = evaluate_robustness(model, x, y, attacks, eps_sweep=SWEEP, points=60, batch_size=25, seed=1)
    strip = lambda report: [{k: v for k, v in vars(r).items() if k != "seconds"} for r in report.rows]  # noqa: E731
    assert strip(first) == strip(again)
    other = evaluate_robustness(model, x, y, [("square", {"queries": 30})], eps_sweep=["0.1"], points=60, seed=2)
    assert other.rows[0].work != first.rows[4].work  # another seed, another random search


def test_datasets_and_loaders_give_the_same_report(setup):
    model, x, y = setup
    dataset = torch.utils.data.TensorDataset(x, y)
    kwargs = dict(attacks=[("pgd", {"steps": 3})], eps_sweep=["0.1"], points=50, batch_size=16)
    from_tensors = evaluate_robustness(model, x, y, **kwargs).rows[0]
    from_dataset = evaluate_robustness(model, dataset, **kwargs).rows[0]
    loader = torch.utils.data.DataLoader(dataset, batch_size=16)
    from_loader = evaluate_robustness(model, loader, **kwargs).rows[0]
    assert from_tensors.robust_accuracy == from_dataset.robust_accuracy == from_loader.robust_accuracy
    assert from_tensors.points == from_dataset.points == from_loader.points == 50
    with pytest.raises(bionas.BionasError, match="shuffles"):
        evaluate_robustness(model, torch.utils.data.DataLoader(dataset, shuffle=True), **kwargs)


def test_onepixel_has_no_eps_sweep(setup):
    model, x, y = setup
    with pytest.raises(bionas.BionasError, match="no eps budget"):
        evaluate_robustness(model, x, y, [{"name": "onepixel", "eps": ["0.1"]}])
    report = evaluate_robustness(
        model, x, y, [("onepixel", {"population": 8, "generations": 1})], eps_sweep=SWEEP, points=10
    )
    assert [(r.attack, r.budget_label, r.eps) for r in report.rows] == [("onepixel", "1 pixel", None)]


def test_the_spec_attack_list_validates_and_feeds_the_evaluation(toy_plugins, setup):
    attacks = [
        {"name": "pgd", "options": {"steps": 2}, "eps": ["8/255", "0.1"]},
        {"name": "square", "options": {"eps": "4/255", "queries": 20}},
    ]
    spec = bionas.load_spec(toy_plugins.spec(evaluation={"attacks": attacks}))
    model, x, y = setup
    report = evaluate_robustness(model, x, y, spec.evaluation.attacks, points=20)
    assert [(r.attack, r.eps_label) for r in report.rows] == [("pgd", "8/255"), ("pgd", "0.1"), ("square", "4/255")]
    bad = [
        {"name": "transfer", "options": {"attack_options": {"steps": 0}}},
        {"name": "apgd", "options": {"eps": "1/x"}},
    ]
    with pytest.raises(bionas.SpecError) as error:
        bionas.load_spec(toy_plugins.spec(evaluation={"attacks": bad}))
    assert error.value.errors == [
        "evaluation.attacks[0].options: attack_options.steps: Input should be greater than or equal to 1",
        "evaluation.attacks[1].options.eps: expected a number or a fraction like 8/255, got '1/x'",
    ]


def row(attack, threat, eps, robust, family="white-box", gradient="exact", one_step=False, claim=True):
    return RobustnessRow(
        attack,
        threat,
        claim,
        family,
        gradient,
        one_step,
        "eps",
        eps,
        format_eps(eps),
        "linf",
        0.9,
        robust,
        None,
        100,
        90,
        10.0,
        "steps",
        0.0,
    )


def test_masking_flags_with_their_numbers():
    exact, rule = "white-box (exact gradients)", "white-box (rule gradients)"
    rows = [
        row("pgd", exact, 0.1, 0.30),
        row("pgd", exact, 0.3, 0.00),
        row("pgd", rule, 0.1, 0.80, gradient="rule", claim=False),
        row("pgd", rule, 0.3, 0.70, gradient="rule", claim=False),
        row("fgsm", exact, 0.1, 0.25, one_step=True),
        row("square", "black-box (score queries)", 0.1, 0.295, family="black-box", gradient=None),
        row("transfer (pgd)", "transfer (surrogate: bp)", 0.3, 0.02, family="transfer", gradient=None),
    ]
    flags = masking_flags(rows)
    kinds = sorted((f.kind, tuple(f.attacks)) for f in flags)
    assert kinds == [
        ("not-zero-at-largest-eps", ("pgd",)),  # the rule-gradient sweep stays at 70%
        ("one-step-beats-iterative", ("fgsm", "pgd")),
        ("stronger-than-white-box", ("square", "pgd")),  # square beats rule-gradient pgd, not exact (0.5 points)
        ("stronger-than-white-box", ("transfer (pgd)", "pgd")),  # 70% vs 2%, rule gradients
    ]
    assert [f.claim for f in flags if f.attacks[0] in ("square", "transfer (pgd)")] == [False, False]
    square_flag = next(f for f in flags if f.attacks[0] == "square")
    assert "rule gradients" in square_flag.message and square_flag.values == {"square": 0.295, "pgd": 0.8}
    fgsm_flag = next(f for f in flags if f.kind == "one-step-beats-iterative")
    assert "25.0%" in fgsm_flag.message and "5.0 points" in fgsm_flag.message


def test_beating_a_weak_white_box_attack_is_not_masking():
    exact = "white-box (exact gradients)"
    rows = [
        row("fgsm", exact, 0.2, 0.50, one_step=True),
        row("pgd", exact, 0.2, 0.20),
        row("apgd-ce", exact, 0.2, 0.10),
        row("square", "black-box (score queries)", 0.2, 0.15, family="black-box", gradient=None),
    ]
    assert masking_flags(rows) == []  # square beats fgsm and pgd, but not apgd
    rows[2] = row("apgd-ce", exact, 0.2, 0.18)
    [flag] = masking_flags(rows)
    assert (flag.kind, flag.attacks, flag.claim) == ("stronger-than-white-box", ["square", "apgd-ce"], True)


def test_report_json_markdown_and_plot(setup, tmp_path):
    model, x, y = setup
    attacks = [("pgd", {"steps": 3}), ("pgd", {"steps": 3, "gradient": "rule"})]
    report = evaluate_robustness(model, x, y, attacks, eps_sweep=["8/255", "0.1"], points=40, name="mlp")
    data = json.loads(report.save_json(tmp_path / "r.json").read_text())
    assert data["points"] == 40 and len(data["rows"]) == 4 and RULE_GRADIENT_NOTE in data["notes"]
    assert [r["claim"] for r in data["rows"]] == [True, True, False, False]
    text = report.markdown()
    assert "| pgd | white-box (rule gradients) † | 8/255 |" in text and f"† {RULE_GRADIENT_NOTE}" in text
    png = report.plot(tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_format_eps():
    assert [format_eps(e) for e in (8 / 255, 0.3, 0.2, 0.0, 1e-3 / 7, None)] == [
        "8/255",
        "0.3",
        "0.2",
        "0",
        "0.0001429",
        "-",
    ]


# -- the command ---------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def fake_target(monkeypatch, setup):
    model, x, y = setup
    surrogate = mlp(hidden=32, seed=5)

    def load(path, access=None):
        return Target(model, (x, y), "mlp")

    def load_model(path):  # the transfer attack reads only its surrogate's network
        assert "surrogate" in str(path)
        return surrogate, {}, path

    monkeypatch.setattr(robustness, "load_target", load)
    monkeypatch.setattr(robustness.target, "load_model", load_model)


def test_attack_command_prints_the_table_and_writes_json_and_png(fake_target, tmp_path):
    out = tmp_path / "out"
    args = [
        "attack",
        str(tmp_path),
        "--attack",
        "fgsm",
        "--attack",
        "pgd",
        "--eps",
        "8/255",
        "--eps",
        "0.1",
        "--points",
        "30",
        "--gradient",
        "rule",
        "--out",
        str(out),
    ]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "| fgsm | white-box (rule gradients) † | 8/255 |" in result.stdout and RULE_GRADIENT_NOTE in result.stdout
    data = json.loads((out / "robustness.json").read_text())
    assert [(r["attack"], r["eps_label"], r["points"]) for r in data["rows"]] == [
        ("fgsm", "8/255", 30),
        ("fgsm", "0.1", 30),
        ("pgd", "8/255", 30),
        ("pgd", "0.1", 30),
    ]
    assert (out / "robustness.png").stat().st_size > 0


def test_attack_command_transfer_takes_a_surrogate(fake_target, tmp_path):
    args = [
        "attack",
        str(tmp_path),
        "--attack",
        "transfer",
        "--surrogate",
        str(tmp_path / "surrogate"),
        "--eps",
        "0.1",
        "--points",
        "20",
        "--out",
        str(tmp_path / "o"),
    ]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "transfer (surrogate:" in result.stdout


class RelayAttack(NudgeAttack):
    """A plugin's attack with a surrogate option: --surrogate reaches it, not only 'transfer'."""

    name = "relay"

    class Options(NudgeAttack.Options):
        surrogate: str | None = Field(default=None, description="Surrogate.")


@pytest.fixture
def attack_items(fake_target, monkeypatch):
    """The (name, options) the attack command hands to evaluate_robustness; the evaluation is skipped."""

    class Plugin:
        @bionas.hookimpl
        def bionas_register_attacks(self, register):
            register(RelayAttack)

    bionas.registry.get_registry().register_plugin(Plugin(), "relay")
    seen = []

    def evaluate(model, images, labels, items, **kwargs):
        seen.extend(items)
        raise bionas.DataError("evaluation skipped")

    monkeypatch.setattr(robustness, "evaluate_robustness", evaluate)
    return seen


def test_attack_command_gives_the_surrogate_to_every_attack_with_that_option(attack_items, tmp_path):
    args = ["attack", str(tmp_path), "--attack", "relay", "--attack", "fgsm", "--surrogate", "s.safetensors"]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 1 and "evaluation skipped" in result.stderr
    assert dict(attack_items) == {"relay": {"surrogate": "s.safetensors"}, "fgsm": {"gradient": "exact"}}
    assert "--surrogate" not in result.stderr


def test_attack_command_warns_when_no_attack_takes_the_surrogate(attack_items, tmp_path):
    result = runner.invoke(build_app(), ["attack", str(tmp_path), "--attack", "fgsm", "--surrogate", "s.safetensors"])
    assert "warning: --surrogate is ignored: none of the attacks (fgsm) takes a surrogate" in result.stderr
    assert dict(attack_items) == {"fgsm": {"gradient": "exact"}}


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--attack", "pdg"], 2, "Did you mean: pgd"),
        (["--attack", "pgd", "--eps", "8/x"], 1, "fraction like 8/255"),
        (["--attack", "transfer", "--points", "5"], 1, "with_surrogate"),
    ],
)
def test_attack_command_errors_are_messages(fake_target, tmp_path, args, code, message):
    result = runner.invoke(build_app(), ["attack", str(tmp_path), *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == code and message in result.stderr and "Traceback" not in result.output


def test_attack_command_on_a_directory_without_a_network(tmp_path):
    result = runner.invoke(build_app(), ["attack", str(tmp_path), "--attack", "pgd"])
    assert result.exit_code == 1 and "no trained network at" in result.stderr and "Traceback" not in result.output
