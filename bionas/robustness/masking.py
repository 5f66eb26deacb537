"""Signs of gradient masking among the rows of one model (Athalye et al. 2018), each with its numbers.

* a black-box or transfer attack beating a white-box one at the same budget by
  more than `tolerance` (1 point);
* a one-step attack (fgsm) beating an iterative one with the same gradient source;
* an iterative white-box attack whose accuracy is not near 0 (above `near_zero`)
  at the largest eps of a sweep of two or more budgets.
"""

from __future__ import annotations

from collections.abc import Sequence

from bionas.robustness.labels import percent
from bionas.robustness.report import MaskingFlag, RobustnessRow

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
                f"{stronger.attack} [{stronger.threat_model}] leaves {percent(stronger.robust_accuracy)} at eps "
                f"{weaker.budget_label}, {gap:.1f} points below {weaker.attack} [{weaker.threat_model}] "
                f"({percent(weaker.robust_accuracy)}): {why if weaker.claim else RULE_MASKING}",
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
                    f"{attack} [{threat}] still leaves {percent(top.robust_accuracy)} at the largest eps of its sweep "
                    f"({top.budget_label}); an unmasked attack drives accuracy towards 0 as eps grows",
                    top.eps,
                    [attack],
                    {attack: top.robust_accuracy},
                    top.claim,
                )
            )
    return flags
