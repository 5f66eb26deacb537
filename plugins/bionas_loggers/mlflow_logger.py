"""mlflow: one MLflow run per bionas run: the resolved spec as params, every record's numbers as
metrics, the run directory's outputs as artifacts.

The default tracking URI is a SQLite database in the run directory, mlflow.db, with
the artifacts in mlartifacts/ beside it (`mlflow ui --backend-store-uri
sqlite:///RUN/mlflow.db`): the local store MLflow 3 recommends, where its file store
is deprecated. `tracking_uri` sends the run to any store or server MLflow's client
reaches. The MLflow run's id is kept in mlflow_run.json, so a resumed bionas run
continues the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import Field

import bionas
from bionas.errors import one_line
from bionas.rundir import read_json, write_json
from bionas.tracking import Status, scalars

STATE_FILE = "mlflow_run.json"
BATCH = 100  # MLflow takes at most 100 params per log_batch call
MAX_VALUE = 6000  # and param values of at most 6000 characters
STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
# MLflow 3 keeps its file store in maintenance mode and refuses to open one unless this is true.
ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
DATABASE = "mlflow.db"  # the default store, in the run directory
ARTIFACTS = "mlartifacts"  # and the default store's artifacts (MLflow's own default is ./mlruns of the cwd)


def flat_params(value: Any, prefix: str = "") -> dict[str, str]:
    """The resolved spec as MLflow params: nested keys joined by dots (`retrain.lr`, `space.rules.0.name`),
    values as JSON (strings as they are)."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = enumerate(value)
    else:
        text = value if isinstance(value, str) else json.dumps(value)
        return {prefix: text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."}
    out: dict[str, str] = {}
    for key, item in items:
        name = re.sub(r"[^A-Za-z0-9_.\- /]", "_", str(key))  # the characters MLflow accepts in a key
        out.update(flat_params(item, f"{prefix}.{name}" if prefix else name))
    return out


class MLflow(bionas.Logger):
    name = "mlflow"
    description = "An MLflow run: the resolved spec as params, metrics per epoch and stage, the outputs as artifacts."
    modules = ("mlflow", "sqlalchemy", "alembic")  # MLflow's SQL stores (the default) need the other two
    install = "bionas[mlflow]"

    class Options(bionas.PluginOptions):
        tracking_uri: str | None = Field(
            default=None, description="MLflow tracking URI (a server such as http://host:5000, databricks, "
            "sqlite:///path.db, a file: directory); null: a SQLite database, mlflow.db, in the run directory.")
        experiment: str | None = Field(default=None, description="MLflow experiment; null: the spec's name.")
        run_name: str | None = Field(default=None, description="MLflow run name; null: the run directory's name.")
        tags: dict[str, str] = Field(default_factory=dict, description="Tags set on the MLflow run.")
        weights: bool = Field(default=False, description="Upload the weights (model.safetensors and any other "
                              ".safetensors of the run directory) as artifacts too.")

    def start(self, run: bionas.LogRun) -> None:
        from mlflow.tracking import MlflowClient  # imports mlflow: only runs that use it pay

        self.state_path = run.dir / STATE_FILE
        self.artifacts = None if self.options.tracking_uri else (run.dir / ARTIFACTS).resolve().as_uri()
        self.uri = self.options.tracking_uri or f"sqlite:///{(run.dir / DATABASE).resolve()}"
        if urlparse(self.uri).scheme in ("", "file"):
            # The spec names a file store: opt in to it, unless the environment says otherwise (docs/tracking.md).
            os.environ.setdefault(ALLOW_FILE_STORE, "true")
        # MLflow announces making a new database's tables at INFO, between the run's progress bars.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            self.run_id = self.resumed_run(run) or self.new_run(run)
        except Exception as exc:  # a wrong URI, a server that is down: one line, before any work
            raise bionas.BionasError(f"mlflow: cannot start a run at {self.uri}: {one_line(exc)}") from None

    def resumed_run(self, run: bionas.LogRun) -> str | None:
        """The MLflow run an earlier session of this bionas run started in the same store, set running again."""
        if not (run.resumed and self.state_path.exists()):
            return None
        state = read_json(self.state_path)
        if state.get("tracking_uri") != self.options.tracking_uri:
            return None  # another store: start a run there
        try:
            self.client.get_run(state["run_id"])
        except Exception:
            return None  # deleted meanwhile
        self.client.update_run(state["run_id"], status="RUNNING")
        return state["run_id"]

    def new_run(self, run: bionas.LogRun) -> str:
        from mlflow.entities import Param

        name = self.options.experiment or run.name
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (experiment.experiment_id if experiment
                         else self.client.create_experiment(name, artifact_location=self.artifacts))
        tags = {"bionas.run_dir": str(run.dir.resolve()), **self.options.tags}
        run_id = self.client.create_run(experiment_id, tags=tags,
                                        run_name=self.options.run_name or run.dir.resolve().name).info.run_id
        params = [Param(key, value) for key, value in flat_params(run.spec).items()]
        for first in range(0, len(params), BATCH):
            self.client.log_batch(run_id, params=params[first:first + BATCH])
        # Kept only now that the run exists: a session killed before this line starts a new run on resume.
        write_json(self.state_path, {"tracking_uri": self.options.tracking_uri, "run_id": run_id,
                                     "experiment_id": experiment_id})
        return run_id

    def log(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stage, step, now = record.get("stage", "run"), int(record.get("epoch", 0)), int(time.time() * 1000)
        metrics = [Metric(f"{stage}/{key}", value, now, step) for key, value in scalars(record).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_files(self, paths: Sequence[Path]) -> None:
        for path in paths:
            if path.suffix != ".safetensors" or self.options.weights:
                self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: Status) -> None:
        self.client.set_terminated(self.run_id, status=STATUS[status])
