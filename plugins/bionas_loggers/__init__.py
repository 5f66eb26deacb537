"""First-party experiment loggers of bionas, registered through the `bionas` entry-point group.

jsonl writes metrics.jsonl and is on in every run; tensorboard and mlflow are
listed in a spec's `loggers` and need their optional extra
(`pip install 'bionas[tensorboard]'`, `'bionas[mlflow]'`). docs/tracking.md.
"""

import bionas
from bionas_loggers.jsonl import JsonLines
from bionas_loggers.mlflow_logger import MLflow
from bionas_loggers.tensorboard_logger import TensorBoard

LOGGERS = (JsonLines, TensorBoard, MLflow)


@bionas.hookimpl
def bionas_register_loggers(register):
    for logger in LOGGERS:
        register(logger)
