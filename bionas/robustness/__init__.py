"""Robustness evaluation: attacks swept over budgets on fixed test points, and an honest report.

    report = evaluate_robustness(model, images, labels, ["fgsm", "pgd", "square"], eps_sweep=["2/255", "8/255"])
    print(report.markdown()); report.save_json("robustness.json"); report.plot("robustness.png")

    evaluate.py  the evaluation loop and how it counts
    resolve.py   the attacks in the forms the loop accepts, as instances with eps sweeps
    points.py    the test points (tensors, a dataset split, a DataLoader) as fixed batches
    masking.py   gradient-masking flags
    report.py    RobustnessReport, its rows and flags, and its JSON form
    markdown.py  the report as markdown;  plot.py  as a PNG curve;  labels.py  eps and percent labels
    target.py    `bionas attack`'s target: a saved network and its test split
"""

from bionas.robustness.evaluate import evaluate_robustness
from bionas.robustness.labels import format_eps
from bionas.robustness.masking import masking_flags
from bionas.robustness.report import MaskingFlag, RobustnessReport, RobustnessRow
from bionas.robustness.resolve import resolve_attacks
from bionas.robustness.target import DataAccess, Target, load_target, recorded_dataset

__all__ = [
    "evaluate_robustness",
    "RobustnessReport",
    "RobustnessRow",
    "MaskingFlag",
    "Target",
    "load_target",
    "DataAccess",
    "recorded_dataset",
    "format_eps",
    "masking_flags",
    "resolve_attacks",
]
