"""The evaluation loop: every attack at every budget of its sweep on the same test points.

Counting (REFERENCES.md, defect 7 of the paper's code): robust accuracy is over
ALL points; a point is robust only if it is correct when clean AND its
adversarial image is still classified correctly. Attacks run only on the points
correct when clean (the others cannot count as robust anyway); the success rate
is among those. Clean accuracy is computed once and shown beside every row.

Every adversarial batch is checked (shape, [0, 1], the attack's budget) before
it is counted, so a faulty attack plugin cannot produce a number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from bionas.attacks import Attack, AttackError, predict
from bionas.errors import BionasError
from bionas.robustness.labels import format_eps
from bionas.robustness.masking import masking_flags
from bionas.robustness.points import TestPoints
from bionas.robustness.report import RobustnessReport, RobustnessRow
from bionas.robustness.resolve import AttackItem, resolve_attacks
from bionas.seeds import hash_seed
from bionas.training import eval_mode, resolve_device


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
    cuda_graphs: bool = False,
) -> RobustnessReport:
    """Attack `model` on the first `points` test points with every attack at every budget of its sweep.

    `images` is a tensor of [0, 1] images (with `labels`), a torch Dataset split or an
    unshuffled DataLoader. The model is moved to `device` (default: where its
    parameters are; "auto": cuda when available). Batch b of an attack is seeded with hash_seed(seed, attack
    seed, b): the same call gives the same report. `cuda_graphs` (runtime.cuda_graphs): the iterations of PGD
    and APGD run as CUDA graph replays, each batch of clean-correct points padded to `batch_size`.
    """
    resolved = resolve_attacks(attacks, eps_sweep)
    data = TestPoints(images, labels, points, batch_size)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    else:
        device = resolve_device(str(device))
    model.to(device)
    rows = []
    with eval_mode(model):
        correct = torch.cat([_correct(model, x.to(device), y.to(device)) for x, y in data.batches()])
        if len(correct) == 0:
            raise BionasError("no test points to evaluate")
        clean = correct.float().mean().item()
        for attack, sweep in resolved:
            for eps in sweep if sweep is not None else [None]:
                run = attack.with_options(eps=eps) if eps is not None else attack
                run = run.with_cuda_graphs(cuda_graphs, batch_size) if cuda_graphs else run
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


def _attack_row(model, attack: Attack, data: TestPoints, correct, clean, device, seed) -> RobustnessRow:
    robust = torch.zeros_like(correct)
    work_sum, attacked, offset = 0.0, 0, 0
    start = time.perf_counter()
    for batch, (x, y) in enumerate(data.batches()):
        chosen = correct[offset : offset + len(x)].nonzero().squeeze(1)
        if len(chosen):
            xs, ys = x[chosen].to(device), y[chosen].to(device)
            result = attack.run(model, xs, ys, seed=hash_seed(seed, attack.seed, batch))
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
