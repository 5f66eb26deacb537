"""Robustness evaluation: attacks swept over budgets on fixed test points, and an honest report.

    report = evaluate_robustness(model, images, labels, ["fgsm", "pgd", "square"], eps_sweep=["2/255", "8/255"])
    print(report.markdown()); report.save_json("robustness.json"); report.plot("robustness.png")

Counting (REFERENCES.md, defect 7 of the paper's code): robust accuracy is over
ALL points; a point is robust only if it is correct when clean AND its
adversarial image is still classified correctly. Attacks run only on the points
correct when clean (the others cannot count as robust anyway); the success rate
is among those. Clean accuracy is computed once and shown beside every row.

Every adversarial batch is checked (shape, [0, 1], the attack's budget) before
it is counted, so a faulty attack plugin cannot produce a number.

Gradient-masking flags (Athalye et al. 2018), each with its numbers:
* a black-box or transfer attack beating a white-box one at the same budget by
  more than `tolerance` (1 point);
* a one-step attack (fgsm) beating an iterative one with the same gradient source;
* an iterative white-box attack whose accuracy is not near 0 (above `near_zero`)
  at the largest eps of a sweep of two or more budgets.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bionas.__about__ import __version__
from bionas.attacks import RULE_GRADIENT_NOTE, Attack, AttackError, model_mode, predict
from bionas.errors import BionasError
from bionas.training import resolve_device

AttackItem = Any  # Attack | name | (name, options) | AttackSpec | {"name", "options", "eps"}


# -- the target of a `bionas attack` command ---------------------------------------------------


@dataclass
class Target:
    """A trained model and the test data it is evaluated on."""

    model: nn.Module
    data: Any  # (images, labels) tensors, a torch Dataset split, or a DataLoader
    name: str


def load_target(path: str | Path) -> Target:
    """The model of a run directory (its model.safetensors) or of a saved network file, and its test split."""
    from bionas.pipeline import load_run_target  # raises "no trained network at ..." for a missing path

    return load_run_target(path)


# -- the report ----------------------------------------------------------------------------------


def format_eps(eps: float | None) -> str:
    """A short decimal when one is exact (0.3, 0.2), else k/255 when k is whole (8/255), else 4 digits."""
    if eps is None:
        return "-"
    short = f"{eps:.4g}"
    if float(short) == eps:
        return short
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return short


def _percent(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


@dataclass
class RobustnessRow:
    """One attack at one budget."""

    attack: str  # label: name plus variant (norm, loss, base attack)
    threat_model: str
    claim: bool  # False for rule gradients: a separate threat model, not a robustness claim
    family: str  # white-box | black-box | transfer
    gradient: str | None  # exact | rule for white-box attacks
    one_step: bool
    budget: str | None  # the option swept: eps, pixels, ...
    eps: float | None
    eps_label: str
    norm: str | None
    clean_accuracy: float
    robust_accuracy: float  # over ALL points
    success_rate: float | None  # among the points correct when clean
    points: int
    attacked: int  # points correct when clean, the ones attacked
    work: float  # mean per attacked point
    work_unit: str
    seconds: float
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.attack, self.threat_model

    @property
    def budget_label(self) -> str:
        if self.budget == "eps":
            return self.eps_label if self.norm in (None, "linf") else f"{self.eps_label} ({self.norm})"
        if not self.budget:
            return "-"
        value = self.options.get(self.budget, "-")
        unit = self.budget[:-1] if value == 1 and self.budget.endswith("s") else self.budget
        return f"{value} {unit}"


@dataclass
class MaskingFlag:
    """A sign of gradient masking, with the numbers behind it."""

    kind: str  # stronger-than-white-box | one-step-beats-iterative | not-zero-at-largest-eps
    message: str
    eps: float | None
    attacks: list[str]
    values: dict[str, float]
    claim: bool = True  # False: about the rule-gradient threat model, where masking is the expected finding


@dataclass
class RobustnessReport:
    rows: list[RobustnessRow]
    flags: list[MaskingFlag]
    clean_accuracy: float
    points: int
    model: str = "model"
    seed: int = 0
    batch_size: int = 256
    device: str = "cpu"
    tolerance: float = 0.01
    near_zero: float = 0.05

    @property
    def notes(self) -> list[str]:
        notes = ["Robust accuracy counts over all points: a point wrong when clean is not robust."]
        if any(not row.claim for row in self.rows):
            notes.append(RULE_GRADIENT_NOTE)
        return notes

    def to_json(self) -> dict[str, Any]:
        return {
            "bionas_version": __version__,
            "model": self.model,
            "points": self.points,
            "clean_accuracy": self.clean_accuracy,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "device": self.device,
            "tolerance": self.tolerance,
            "near_zero": self.near_zero,
            "rows": [asdict(row) for row in self.rows],
            "flags": [asdict(flag) for flag in self.flags],
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RobustnessReport:
        """The report `to_json` wrote (robustness.json of a run)."""
        fields = ("clean_accuracy", "points", "model", "seed", "batch_size", "device", "tolerance", "near_zero")
        return cls(
            rows=[RobustnessRow(**row) for row in data["rows"]],
            flags=[MaskingFlag(**flag) for flag in data["flags"]],
            **{key: data[key] for key in fields if key in data},
        )

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
        return path

    def markdown(self) -> str:
        lines = [
            f"Robustness of {self.model}: {self.points} points, clean accuracy {_percent(self.clean_accuracy)}, "
            f"seed {self.seed}.",
            "",
            "| attack | threat model | eps | clean acc | robust acc | success rate | points | work |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            threat = row.threat_model + ("" if row.claim else " †")
            work = "-" if math.isnan(row.work) else f"{row.work:.4g} {row.work_unit}"
            cells = [
                row.attack,
                threat,
                row.budget_label,
                _percent(row.clean_accuracy),
                _percent(row.robust_accuracy),
                _percent(row.success_rate),
                str(row.points),
                work,
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
        if any(not row.claim for row in self.rows):
            lines += [f"† {RULE_GRADIENT_NOTE}", ""]
        lines.append(
            "Robust accuracy is over all points (wrong when clean = not robust); success rate is among "
            "the points correct when clean; work is per attacked point."
        )
        lines.append("")
        warnings = [flag for flag in self.flags if flag.claim]
        if warnings:
            lines.append("Gradient-masking warnings:")
            lines += [f"* {flag.message}" for flag in warnings]
        else:
            lines.append("Gradient-masking checks: nothing flagged.")
        expected = [flag for flag in self.flags if not flag.claim]
        if expected:
            lines += ["", "Rule-gradient threat model (masking expected there; not a warning about the true gradient):"]
            lines += [f"* {flag.message}" for flag in expected]
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path) -> Path:
        """PNG: robust accuracy against eps per attack; budgets other than eps as horizontal lines."""
        from bionas.plots import figure, save

        fig, axes = figure(size=(7, 4.5))
        ax = axes[0, 0]
        ax.axhline(100 * self.clean_accuracy, color="black", linestyle=":", linewidth=1, label="clean")
        curves: dict[tuple[str, str], list[RobustnessRow]] = {}
        for row in self.rows:
            curves.setdefault(row.key, []).append(row)
        for (attack, threat), rows in curves.items():
            label = f"{attack}: {threat}" + ("" if rows[0].claim else " (not a robustness claim)")
            style = "-" if rows[0].claim else "--"
            if rows[0].budget == "eps":
                rows = sorted(rows, key=lambda r: r.eps)
                ax.plot(
                    [0.0] + [r.eps for r in rows],
                    [100 * self.clean_accuracy] + [100 * r.robust_accuracy for r in rows],
                    style,
                    marker="o",
                    label=label,
                )
            else:
                for r in rows:
                    ax.axhline(
                        100 * r.robust_accuracy, linestyle="-.", linewidth=1, label=f"{label} [{r.budget_label}]"
                    )
        ax.set_xlabel("eps (pixel space, [0, 1] images)")
        ax.set_ylabel("accuracy over all points (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{self.model}: {self.points} points")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        return save(fig, path, dpi=120)


# -- inputs --------------------------------------------------------------------------------------


class _Points:
    """The first `points` test points in a fixed order, re-iterable as (images, labels) batches."""

    def __init__(self, images, labels, points: int | None, batch_size: int):
        self.batch_size = batch_size
        if torch.is_tensor(images):
            if labels is None or len(labels) != len(images):
                raise BionasError("give one label per image")
            n = len(images) if points is None else min(points, len(images))
            self.tensors = (images[:n], torch.as_tensor(labels[:n]))
            self.source = None
        else:
            if labels is not None:
                raise BionasError("labels are given with image tensors only; a dataset carries its own")
            self.tensors = None
            self.source = images
            self.limit = points
            loader = images if isinstance(images, torch.utils.data.DataLoader) else None
            if loader is not None and isinstance(loader.sampler, torch.utils.data.RandomSampler):
                raise BionasError("the data loader shuffles: every attack must see the same points; use shuffle=False")

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.tensors is not None:
            images, labels = self.tensors
            for start in range(0, len(images), self.batch_size):
                yield images[start : start + self.batch_size], labels[start : start + self.batch_size]
            return
        source = self.source
        if not isinstance(source, torch.utils.data.DataLoader):
            if self.limit is not None:
                source = torch.utils.data.Subset(source, range(min(self.limit, len(source))))
            source = torch.utils.data.DataLoader(source, batch_size=self.batch_size, shuffle=False)
        seen = 0
        for images, labels in source:
            labels = torch.as_tensor(labels)
            if self.limit is not None:
                images, labels = images[: self.limit - seen], labels[: self.limit - seen]
            if len(images) == 0:
                return
            seen += len(images)
            yield images, labels


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from parts (evaluation seed, attack seed, batch); stable across runs and machines."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def resolve_attacks(
    attacks: Iterable[AttackItem], eps_sweep: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None
) -> list[tuple[Attack, list[float] | None]]:
    """(attack, eps values or None) per item; names and options become attack instances.

    `eps_sweep` is one sweep for every attack with an eps budget, or {attack name or label: sweep};
    an item's own sweep (`AttackSpec.eps`, or "eps" of a dict item) wins.
    """
    from bionas.registry import get_attack
    from bionas.spec import AttackSpec, parse_fraction

    resolved = []
    for item in attacks:
        own = None
        if isinstance(item, Attack):
            attack = item
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Attack):
            attack, own = item  # an attack with its own sweep (None: its own eps)
        elif isinstance(item, str):
            attack = get_attack(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            attack = get_attack(item[0], **(item[1] or {}))
        elif isinstance(item, (AttackSpec, Mapping)):
            spec = item if isinstance(item, AttackSpec) else AttackSpec.model_validate(item)
            attack, own = get_attack(spec.name, **spec.options), spec.eps
        else:
            raise BionasError(f"not an attack: {item!r} (give an Attack, a name, (name, options) or an AttackSpec)")
        sweep = own
        if sweep is None and eps_sweep is not None:
            if isinstance(eps_sweep, Mapping):
                sweep = eps_sweep.get(attack.label, eps_sweep.get(attack.name))
            elif attack.budget == "eps":
                sweep = eps_sweep
        if sweep is not None:
            if attack.budget != "eps":
                raise BionasError(
                    f"attack '{attack.label}' has no eps budget (its budget is {attack.budget}); no eps sweep"
                )
            try:
                sweep = sorted(float(parse_fraction(e)) for e in sweep)
            except ValueError as exc:
                raise BionasError(f"eps of attack '{attack.label}': {exc}") from None
        resolved.append((attack, sweep))
    return resolved


# -- evaluation ----------------------------------------------------------------------------------


def evaluate_robustness(
    model: nn.Module,
    images: Any,
    labels: torch.Tensor | None = None,
    attacks: Iterable[AttackItem] = ("pgd",),
    eps_sweep: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
    *,
    points: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    tolerance: float = 0.01,
    near_zero: float = 0.05,
    name: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> RobustnessReport:
    """Attack `model` on the first `points` test points with every attack at every budget of its sweep.

    `images` is a tensor of [0, 1] images (with `labels`), a torch Dataset split or an
    unshuffled DataLoader. The model is moved to `device` (default: where its
    parameters are; "auto": cuda when available). Batch b of an attack is seeded with derive_seed(seed, attack
    seed, b): the same call gives the same report.
    """
    resolved = resolve_attacks(attacks, eps_sweep)
    data = _Points(images, labels, points, batch_size)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    else:
        device = resolve_device(str(device))
    model.to(device)
    rows = []
    with model_mode(model):
        correct = torch.cat([_correct(model, x.to(device), y.to(device)) for x, y in data.batches()])
        if len(correct) == 0:
            raise BionasError("no test points to evaluate")
        clean = correct.float().mean().item()
        for attack, sweep in resolved:
            for eps in sweep if sweep is not None else [None]:
                run = attack.with_options(eps=eps) if eps is not None else attack
                if progress:
                    budget = format_eps(eps) if eps is not None else f"{run.budget}={run.budget_value}"
                    progress(f"{run.label} [{run.threat_model}] at {budget}")
                rows.append(_attack_row(model, run, data, correct, clean, device, seed))
    n = len(correct)
    report = RobustnessReport(
        rows, [], clean, n, name or type(model).__name__, seed, batch_size, str(device), tolerance, near_zero
    )
    report.flags = masking_flags(rows, tolerance, near_zero)
    return report


def _correct(model, x, y) -> torch.Tensor:
    return (predict(model, x).argmax(dim=1) == y).cpu()


def _attack_row(model, attack: Attack, data: _Points, correct, clean, device, seed) -> RobustnessRow:
    robust = torch.zeros_like(correct)
    work_sum, attacked, offset = 0.0, 0, 0
    start = time.perf_counter()
    for batch, (x, y) in enumerate(data.batches()):
        chosen = correct[offset : offset + len(x)].nonzero().squeeze(1)
        if len(chosen):
            xs, ys = x[chosen].to(device), y[chosen].to(device)
            result = attack.run(model, xs, ys, seed=derive_seed(seed, attack.seed, batch))
            attack.check_result(xs, result.adversarial)
            robust[offset + chosen] = _correct(model, result.adversarial, ys)
            work_sum += float(result.work.sum())
            attacked += len(chosen)
        offset += len(x)
    if offset != len(correct):
        raise AttackError("the test points changed between passes; give a dataset with a fixed order")
    n = len(correct)
    robust_accuracy = robust.float().mean().item()  # over ALL points (robust implies correct when clean)
    success = 1.0 - robust.sum().item() / attacked if attacked else None
    eps = float(attack.budget_value) if attack.budget == "eps" else None
    return RobustnessRow(
        attack=attack.label,
        threat_model=attack.threat_model,
        claim=attack.is_robustness_claim,
        family=attack.family,
        gradient=attack.gradient,
        one_step=attack.one_step,
        budget=attack.budget,
        eps=eps,
        eps_label=format_eps(eps),
        norm=attack.norm,
        clean_accuracy=clean,
        robust_accuracy=robust_accuracy,
        success_rate=success,
        points=n,
        attacked=attacked,
        work=work_sum / attacked if attacked else float("nan"),
        work_unit=attack.work_unit,
        seconds=time.perf_counter() - start,
        options=attack.options.model_dump(mode="json"),
    )


RULE_MASKING = "expected of a feedback path misaligned with the true gradient: that path masks it"


def masking_flags(rows: Sequence[RobustnessRow], tolerance: float = 0.01, near_zero: float = 0.05) -> list[MaskingFlag]:
    """The signs of gradient masking among rows of one model (see the module docstring)."""
    flags: list[MaskingFlag] = []
    by_budget: dict[tuple[float, str | None], list[RobustnessRow]] = {}
    for row in rows:
        if row.budget == "eps":
            by_budget.setdefault((round(row.eps, 9), row.norm), []).append(row)

    def beaten(kind: str, stronger: RobustnessRow, weaker: RobustnessRow, why: str) -> None:
        """Flag `weaker` (a white-box row) when `stronger` leaves lower accuracy by more than `tolerance`."""
        if stronger.robust_accuracy >= weaker.robust_accuracy - tolerance:
            return
        gap = 100 * (weaker.robust_accuracy - stronger.robust_accuracy)
        flags.append(
            MaskingFlag(
                kind,
                f"{stronger.attack} [{stronger.threat_model}] leaves {_percent(stronger.robust_accuracy)} at eps "
                f"{weaker.budget_label}, {gap:.1f} points below {weaker.attack} [{weaker.threat_model}] "
                f"({_percent(weaker.robust_accuracy)}): {why if weaker.claim else RULE_MASKING}",
                stronger.eps,
                [stronger.attack, weaker.attack],
                {stronger.attack: stronger.robust_accuracy, weaker.attack: weaker.robust_accuracy},
                weaker.claim,
            )
        )

    for group in by_budget.values():
        white = [r for r in group if r.family == "white-box"]
        # A black-box or transfer attack is compared with the strongest white-box attack of each gradient
        # source: beating a weak one (fgsm) is no sign of masking, beating all of them is.
        for source in sorted({r.gradient or "" for r in white}):
            best = min((r for r in white if (r.gradient or "") == source), key=lambda r: r.robust_accuracy)
            for other in (r for r in group if r.family in ("black-box", "transfer")):
                beaten("stronger-than-white-box", other, best, "the white-box gradients may be masked")
        for one in (r for r in white if r.one_step):
            for it in (r for r in white if not r.one_step and r.gradient == one.gradient):
                why = "the iterative attack's gradients may be masked or its steps too small"
                beaten("one-step-beats-iterative", one, it, why)

    sweeps: dict[tuple[str, str], list[RobustnessRow]] = {}
    for row in rows:
        if row.budget == "eps" and row.family == "white-box" and not row.one_step:
            sweeps.setdefault(row.key, []).append(row)
    for (attack, threat), sweep in sweeps.items():
        if len({r.eps for r in sweep}) < 2:
            continue
        top = max(sweep, key=lambda r: r.eps)
        if top.robust_accuracy > near_zero:
            flags.append(
                MaskingFlag(
                    "not-zero-at-largest-eps",
                    f"{attack} [{threat}] still leaves {_percent(top.robust_accuracy)} at the largest eps of its sweep "
                    f"({top.budget_label}); an unmasked attack drives accuracy towards 0 as eps grows",
                    top.eps,
                    [attack],
                    {attack: top.robust_accuracy},
                    top.claim,
                )
            )
    return flags


__all__ = [
    "evaluate_robustness",
    "RobustnessReport",
    "RobustnessRow",
    "MaskingFlag",
    "Target",
    "load_target",
    "format_eps",
    "masking_flags",
    "resolve_attacks",
    "derive_seed",
]
