"""The pipeline: search -> genotype -> retrain -> test -> attacks -> report, in one run directory.

    run.py             Pipeline (which stages, in which order) and run()
    book.py            stage bookkeeping: stages.json, checkpoints, metrics, resume checks
    context.py         what the stages of one run share
    search_stage.py    the search, or the genotype the spec gives
    train_stage.py     the retrain (and a surrogate's), selected on validation
    evaluate_stage.py  test accuracy and the attacks
    report.py          report.md, rebuilt from the run directory's files
    study.py           a study: the pipeline once per seed (or a shard of the seeds), run_study()
    study_report.py    a study's aggregate, rebuilt from its seed directories' files
    summary.py         the table `bionas run` (or `bionas study`) ends with
    result.py          RunResult, what a run produced
"""

from bionas.pipeline.result import Interrupted, RunResult
from bionas.pipeline.run import Pipeline, run
from bionas.pipeline.study import run_study
from bionas.pipeline.study_report import write_study
from bionas.pipeline.summary import print_study_summary, print_summary

__all__ = ["run", "run_study", "write_study", "RunResult", "Interrupted", "Pipeline", "print_summary",
           "print_study_summary"]
