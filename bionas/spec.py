"""The run spec: pydantic models, two-phase validation, and the JSON schema.

Phase 1 validates the skeleton (sections, types, ranges). Phase 2 resolves
every plugin a spec names (dataset, rules, ops, search, attacks, loggers) through the
registry and validates its options against that plugin's `Options`, so errors
carry their full path: `search.options.epochs: Input should be greater than 0`.
The resolved spec holds each plugin's options with every default filled in.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from bionas.attacks import pixel_budget_error
from bionas.data.base import DatasetInfo
from bionas.errors import BionasError, PluginError, SpecError, format_pydantic_errors, one_line
from bionas.fractions import Fractional, parse_fraction
from bionas.model import Model
from bionas.registry import Registry, get_registry, unknown_name_message
from bionas.rules import wrappable_layers
from bionas.rules.globs import glob_problems
from bionas.rules.refs import rule_name
from bionas.search.base import resolve_space

class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# -- the default search space: data the op and rule plugins own (DARTS's eight ops, the paper's four
# rules, (skip_connect, fa) excluded, bp on the fixed layers, from the first-party plugins) ----------


def default_ops(registry: Registry | None = None) -> list[str]:
    """The ops of the default space: those whose class sets `default_space`, in registration order."""
    return [i.name for i in (registry or get_registry()).in_registration_order("op") if i.cls.default_space]


def default_rules(registry: Registry | None = None) -> list[str]:
    """The searched rules of the default space: `default_candidate` rules, in registration order."""
    return [i.name for i in (registry or get_registry()).in_registration_order("rule") if i.cls.default_candidate]


def default_exclude(ops: list[str], rules: list[str], registry: Registry | None = None) -> list[tuple[str, str]]:
    """The (op, rule) pairs listed ops exclude by default (`default_exclude`) where the rule is listed too."""
    return [(info.name, rule) for info in (registry or get_registry()).in_registration_order("op")
            if info.name in ops for rule in info.cls.default_exclude if rule in rules]


def default_fixed_rule(registry: Registry | None = None) -> str | None:
    """The rule of the fixed layers by default: the first rule marked `backprop` (bp), else None: plain
    layers, which learn by backprop without a rule plugin."""
    return next((i.name for i in (registry or get_registry()).in_registration_order("rule") if i.cls.backprop), None)


class PluginRef(Section):
    """A plugin by name, with its options. A plain string is shorthand for `{name: ...}`."""

    name: str = Field(description="Registered plugin name (see `bionas plugins list`).")
    options: dict[str, Any] = Field(default_factory=dict, description="The plugin's options (see its Options).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class FixedRules(Section):
    """Rules of the layers outside searched edges; recorded in the genotype. null: plain layers (backprop).

    The default is the installed rule marked as backprop (bp), or null when there is none."""

    stem: PluginRef | None = Field(default_factory=default_fixed_rule, description="Rule of the stem convolution.")
    preprocess: PluginRef | None = Field(
        default_factory=default_fixed_rule,
        description="Rule of each cell's input preprocessing (1x1 convs, FactorizedReduce).",
    )
    classifier: PluginRef | None = Field(
        default_factory=default_fixed_rule, description="Rule of the final linear classifier."
    )
    auxiliary: PluginRef | None = Field(
        default_factory=default_fixed_rule, description="Rule of the auxiliary head's layers."
    )


class SpaceSpec(Section):
    """The search space: candidate (operation, rule) pairs on every edge of the DARTS cell."""

    ops: list[str] = Field(
        default_factory=default_ops,
        min_length=1,
        description="Operations on each edge. Parametric ones appear once per rule, parameter-free ones once. "
        "Default: the installed ops that belong to the default space (DARTS's eight).",
    )
    rules: list[PluginRef] = Field(
        default_factory=default_rules,
        min_length=1,
        description="Learning rules a parametric operation may learn by (any registered rule). Default: the "
        "installed rules that are default candidates (the paper's usf, brsf, frsf, fa).",
    )
    fixed_rules: FixedRules = Field(default_factory=FixedRules, description="Rules of the non-searched layers.")
    exclude: list[tuple[str, str]] = Field(
        default_factory=lambda: default_exclude(default_ops(), default_rules()),
        description="(op, rule) pairs removed from the joint space (every listed variant of that rule). A pair "
        "given here must name a listed op and rule; the default: the pairs the listed ops exclude (skip_connect: "
        "fa), where both are listed.",
    )
    channels: int = Field(default=16, gt=0, description="Initial channels of the supernet (DARTS: 16).")
    cells: int = Field(default=8, gt=0, description="Cells of the supernet (DARTS: 8).")
    nodes: int = Field(default=4, gt=0, description="Intermediate nodes per cell (DARTS: 4).")
    stem_multiplier: int = Field(default=3, gt=0, description="Stem output channels = stem_multiplier * channels.")
    partial_channels: int | None = Field(
        default=None,
        ge=1,
        description="PC-DARTS K: 1/K of the channels go through the mixed op (1 = off); null = the search "
        "strategy's default (egnas: 4, others: 1). channels must be a multiple of K.",
    )
    edge_normalization: bool = Field(default=False, description="PC-DARTS edge normalization (beta weights).")

    @field_validator("ops")
    @classmethod
    def _ops_once(cls, ops: list[str]) -> list[str]:
        _raise_item_errors([(i, f"op '{op}' is listed twice") for i, op in enumerate(ops) if op in ops[:i]])
        return ops

    @field_validator("rules")
    @classmethod
    def _rules_once(cls, rules: list[PluginRef]) -> list[PluginRef]:
        # One rule may appear with different options (each is its own candidate); the
        # search space also catches duplicates that differ only by options set to defaults.
        _raise_item_errors([(i, f"rule '{r.name}' is listed twice") for i, r in enumerate(rules) if r in rules[:i]])
        return rules

    @field_validator("exclude")
    @classmethod
    def _exclude_known_pairs(cls, exclude: list[tuple[str, str]], info: ValidationInfo) -> list[tuple[str, str]]:
        if "ops" not in info.data or "rules" not in info.data:
            return exclude  # their own errors are reported; pairs can't be checked against them
        ops = info.data["ops"]
        rules = [rule.name for rule in info.data["rules"]]
        errors = []
        for i, (op, rule) in enumerate(exclude):
            if op not in ops:
                errors.append((i, f"op '{op}' is not in space.ops ({', '.join(ops)})"))
            elif rule not in rules:
                errors.append((i, f"rule '{rule}' is not in space.rules ({', '.join(rules)})"))
        _raise_item_errors(errors)
        return exclude

    @model_validator(mode="wrap")
    @classmethod
    def _defaults_of_the_installed_plugins(cls, data: Any, handler) -> SpaceSpec:
        """A default list left empty (its plugins disabled) is an error that says so; the default excluded
        pairs are those of the listed ops and rules (rules: [bp] stays valid)."""
        if isinstance(data, dict):
            missing = [(field, message) for field, message, default in (("ops", NO_DEFAULT_OPS, default_ops),
                                                                         ("rules", NO_DEFAULT_RULES, default_rules))
                       if field not in data and not default()]
            if missing:
                details = [InitErrorDetails(type=PydanticCustomError("no_default", message), loc=(field,), input=None)
                           for field, message in missing]
                raise ValidationError.from_exception_data("SpaceSpec", details)
        if isinstance(data, dict) and "exclude" not in data:
            ops = data["ops"] if "ops" in data else default_ops()
            rules = data["rules"] if "rules" in data else default_rules()
            # Anything else (null, a number) is left for the field's own "valid list" error.
            if isinstance(ops, (list, tuple)) and isinstance(rules, (list, tuple)):
                data = {**data, "exclude": default_exclude(ops, [rule_name(r) for r in rules])}
        return handler(data)


NO_DEFAULT_OPS = ("no installed op is in the default search space (is the plugin package of its ops disabled?): "
                  "list the ops to search here (bionas plugins list --kind op)")
NO_DEFAULT_RULES = ("no installed rule is a default search candidate (is the plugin package of its rules disabled?): "
                    "list the rules to search here (bionas plugins list --kind rule)")


def _raise_item_errors(errors: list[tuple[int, str]]) -> None:
    """Report each bad list item at its own index (space.exclude[1]: ...)."""
    if errors:
        details = [
            InitErrorDetails(type=PydanticCustomError("invalid_item", message), loc=(i,), input=None)
            for i, message in errors
        ]
        raise ValidationError.from_exception_data("SpaceSpec", details)


class SearchSpec(PluginRef):
    """The search strategy and the share of the training split used to validate the architecture."""

    name: str = Field(description="Search strategy (darts, egnas, random, or a plugin's).")
    arch_fraction: float = Field(
        default=0.5, gt=0, lt=1, description="Share of the training split held out for architecture steps."
    )


class ModelSpec(PluginRef):
    """A fixed network to train with `rules`, instead of a searched or given genotype."""

    name: str = Field(description="A model plugin (resnet20, resnet32, resnet56, lenet5, mlp, or a plugin's), or "
                      "timm/<name> or torchvision/<name> for a model of those libraries.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="The model's options; for timm/<name> and torchvision/<name>, keyword "
        "arguments of the library's constructor (classes and channels come from the data set).")


# The retrain fields that build a genotype's network: a model run has its own architecture.
GENOTYPE_NETWORK_FIELDS = ("channels", "cells", "auxiliary", "auxiliary_weight", "drop_path")
# What a model run's resolved spec says of those it has none of (RetrainSpec.with_defaults).
MODEL_RUN_VALUES = {"auxiliary": False, "drop_path": 0.0}


class RetrainSpec(Section):
    """Retraining the derived network; defaults are DARTS's CIFAR recipe, but the cutout is the data set's.

    A model run (no auxiliary head, no drop path) records auxiliary false and drop path 0."""

    epochs: int = Field(default=600, gt=0, description="Training epochs (DARTS: 600).")
    batch_size: int = Field(default=96, gt=0, description="Minibatch size (DARTS: 96).")
    channels: int = Field(default=36, gt=0, description="Initial channels of the derived network (DARTS: 36).")
    cells: int = Field(default=20, gt=0, description="Cells of the derived network (DARTS: 20).")
    # timm's "sgd" is Nesterov SGD; DARTS trains with classical momentum, timm's "momentum".
    optimizer: str = Field(default="momentum", description="timm optimizer name (create_optimizer_v2).")
    lr: float = Field(default=0.025, gt=0, description="Initial learning rate (DARTS: 0.025).")
    lr_min: float = Field(default=0.0, ge=0, description="Final learning rate of the cosine schedule.")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(default=3e-4, ge=0, description="Weight decay (DARTS: 3e-4).")
    scheduler: str = Field(default="cosine", description="timm scheduler name (create_scheduler_v2).")
    warmup_epochs: int = Field(default=0, ge=0, description="Linear learning-rate warm-up epochs.")
    grad_clip: float | None = Field(default=5.0, gt=0, description="Gradient-norm clip (DARTS: 5); null = off.")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1, description="Label smoothing (DARTS ImageNet: 0.1).")
    auxiliary: bool = Field(default=True, description="Auxiliary head after cell 2*cells//3 (DARTS). A model "
                            "has none: a model run's resolved spec says false.")
    auxiliary_weight: float = Field(default=0.4, ge=0, description="Weight of the auxiliary loss (DARTS: 0.4).")
    drop_path: float = Field(default=0.2, ge=0, lt=1, description="Final drop-path probability, scaled linearly "
                             "(DARTS: 0.2). Drop path belongs to DARTS cells: a model run's resolved spec says 0.")
    cutout: int | None = Field(
        default=None, ge=0, description="Cutout length in pixels; 0 = off; null = the data set's own "
        "(`retrain_cutout`: cifar10, cifar100 16 as DARTS; 0 for the other first-party data sets), filled in "
        "the resolved spec. Must be smaller than the images' side.")

    def with_defaults(self, retrain_cutout: int, model_run: bool) -> RetrainSpec:
        """This recipe with the defaults that depend on the run filled in: a null cutout becomes the data set's
        `retrain_cutout`; a model run (no auxiliary head, no drop path) records auxiliary false, drop path 0."""
        update: dict[str, Any] = {"cutout": retrain_cutout} if self.cutout is None else {}
        if model_run:
            update.update(auxiliary=False, drop_path=0.0)
        return self.model_copy(update=update)

    @field_validator("optimizer")
    @classmethod
    def _timm_optimizer(cls, name: str) -> str:
        if name in COMMON_OPTIMIZERS:
            return name
        from timm.optim import list_optimizers  # doubles the start-up time: only other names pay it

        known = list_optimizers()
        if name.lower().removeprefix("lookahead_") not in known:  # timm takes lookahead_<any of them> too
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown timm optimizer '{name}'.{hint} (timm.optim.list_optimizers() lists the "
                             f"{len(known)} it has)")
        return name

    @field_validator("scheduler")
    @classmethod
    def _timm_scheduler(cls, name: str) -> str:
        if name not in TIMM_SCHEDULERS:
            raise ValueError(unknown_name_message("timm scheduler", "timm schedulers", name, list(TIMM_SCHEDULERS)))
        return name

    @model_validator(mode="after")
    def _lr_range(self) -> RetrainSpec:
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min {self.lr_min:g} is above lr {self.lr:g}: the schedule would raise the "
                             "learning rate; give lr_min <= lr")
        return self


# Optimizers every timm release since 0.9 has (tests/test_bad_inputs.py checks them against timm).
COMMON_OPTIMIZERS = ("momentum", "sgd", "adam", "adamw", "rmsprop", "nesterov")
# The schedules of timm.scheduler.create_scheduler_v2 the retrain can step by epoch alone (timm raises
# for other names, after the search). Not plateau (it steps on a metric and its state is not
# checkpointed), nor rsqrt (it needs a stable timescale the spec has no field for).
TIMM_SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "constant")


class AttackSpec(PluginRef):
    """An attack, with an optional sweep over its budget."""

    name: str = Field(description="Attack (fgsm, pgd, apgd, square, onepixel, transfer, or a plugin's).")
    eps: list[Fractional] | None = Field(
        default=None, description="Budgets to sweep, e.g. [2/255, 8/255]; null = the attack's own eps."
    )


class EvaluationSpec(Section):
    """Test accuracy and adversarial robustness of the retrained network."""

    attacks: list[AttackSpec] = Field(default_factory=list, description="Attacks to run on the test split.")
    points: int | None = Field(
        default=1000, gt=0, description="Test points attacked (the first N, fixed order); null = all."
    )
    batch_size: int = Field(default=256, gt=0, description="Batch size of evaluation and attacks.")


class RuntimeSpec(Section):
    """How fast: precision, memory layout, compilation, data workers."""

    amp: Literal["auto", "bf16", "off"] = Field(
        default="auto", description="bf16 autocast: auto = per device type (bionas.runtime.AUTO_AMP: on CUDA "
        "only), bf16 = always, off = never."
    )
    channels_last: bool | Literal["auto"] = Field(
        default="auto", description="channels_last memory format of the model and its inputs, search and retrain: "
        "auto = per device type (bionas.runtime.AUTO_CHANNELS_LAST: on the CPU and on CUDA)."
    )
    compile: bool | Literal["auto"] = Field(
        default="auto", description="torch.compile the model's training forward (search and retrain): auto = per "
        "device type (bionas.runtime.AUTO_COMPILE: off on the CPU and on CUDA)."
    )
    cuda_graphs: bool | Literal["auto"] = Field(
        default="auto", description="Run each training step, forward-only pass and attack iteration as a CUDA "
        "graph replay (docs/scaling.md): auto = per device type (bionas.runtime.AUTO_CUDA_GRAPHS: on CUDA only); "
        "true off CUDA is an error."
    )
    workers: int = Field(default=4, ge=0, description="DataLoader workers for data sets not held in memory.")
    threads: int | None = Field(
        default=None, gt=0, description="torch's CPU threads for the run (torch.set_num_threads, restored after it); "
        "null = torch's default (the machine's cores). The count changes the float sums, so fixing it gives the "
        "same numbers on machines with different core counts and the same CPU kernels (docs/pipeline.md, "
        "Reproducibility); small networks run no faster on more threads.",
    )


class OutputSpec(Section):
    """Where and what a run writes."""

    dir: str = Field(default="runs/{name}", description="Run directory; {name} is the spec's name.")
    plots: bool = Field(default=True, description="Write PNG plots (training curves, cells, robustness).")

    @field_validator("dir")
    @classmethod
    def _only_name_field(cls, value: str) -> str:
        # Substituted by plain replacement (Spec.run_dir), never str.format: a user's string runs no code.
        unknown = sorted(set(re.findall(r"\{[^{}]*\}", value)) - {"{name}"})
        if unknown or "{" in value.replace("{name}", "") or "}" in value.replace("{name}", ""):
            shown = ", ".join(unknown) or "an unmatched brace"
            raise ValueError(f"{shown} is not a field of a run directory: the only one is {{name}}")
        return value


GenotypeSource = Union[str, dict[str, Any]]


class Spec(Section):
    """A bionas run: search -> genotype -> retrain -> test -> attacks -> report."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Run name; also names the run directory.")
    seed: int = Field(default=0, ge=0, description="Seed of every random choice of the run.")
    seeds: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        min_length=1,
        description="A study: the run once per seed (distinct integers >= 0), each in seed-N/ of the run "
        "directory, and their mean ± sample std (docs/studies.md). seed may then be left out (it becomes the first "
        "of seeds) or must be one of them.",
    )
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N.")
    dataset: PluginRef = Field(description="The data set plugin and its options.")
    # A default of {} (not SpaceSpec()) is validated in place, so its errors carry the path space.*.
    space: SpaceSpec = Field(default_factory=dict, description="The search space.")
    search: SearchSpec | None = Field(default=None, description="The search stage; null when a genotype is given.")
    genotype: GenotypeSource | None = Field(
        default=None, description="A genotype (path to genotype.json, or inline) to retrain instead of searching."
    )
    model: ModelSpec | None = Field(
        default=None, description="A fixed network to train with `rules` instead of searching one; then search "
        "and genotype stay null (docs/models.md).")
    rules: dict[str, PluginRef] | None = Field(
        default=None, description="The model's learning rule per layer: {module-name glob: rule}; a layer takes "
        "the rule of the first glob matching its name or an ancestor's, layers no glob matches learn by plain "
        "backprop, and every glob must give some layer its rule. A rule name alone applies it to every layer. "
        "Only with model.")
    retrain: RetrainSpec | None = Field(
        default_factory=RetrainSpec, description="The retrain stage; null to stop after the search."
    )
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Test and attack stage.")
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description="Speed settings.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Outputs.")
    loggers: list[PluginRef] = Field(
        default_factory=list,
        description="Experiment loggers besides metrics.jsonl (jsonl, always on): tensorboard, mlflow, or a "
        "plugin's; each with its options (docs/tracking.md).",
    )

    @field_validator("loggers")
    @classmethod
    def _loggers_once(cls, loggers: list[PluginRef]) -> list[PluginRef]:
        _raise_item_errors([(i, f"logger '{r.name}' is listed twice") for i, r in enumerate(loggers)
                            if r.name in [earlier.name for earlier in loggers[:i]]])
        return loggers

    @field_validator("seeds")
    @classmethod
    def _seeds_once(cls, seeds: list[int] | None) -> list[int] | None:
        _raise_item_errors([(i, f"seed {seed} is listed twice") for i, seed in enumerate(seeds or [])
                            if seed in seeds[:i]])
        return seeds

    @model_validator(mode="after")
    def _seed_among_seeds(self) -> Spec:
        """A study's `seed` is one of its seeds: given, it must be listed; left out, it is the first."""
        if self.seeds is None:
            return self
        if "seed" not in self.model_fields_set:
            self.seed = self.seeds[0]
        elif self.seed not in self.seeds:
            message = (f"{self.seed} is not one of seeds ({', '.join(map(str, self.seeds))}): in a study, leave "
                       "seed out or make it one of the seeds")
            details = [InitErrorDetails(type=PydanticCustomError("seed_not_in_seeds", message), loc=("seed",),
                                        input=self.seed)]
            raise ValidationError.from_exception_data("Spec", details)
        return self

    def for_seed(self, seed: int) -> Spec:
        """The single run of a study with this seed (`seeds` cleared)."""
        return self.model_copy(update={"seed": seed, "seeds": None}, deep=True)

    @field_validator("rules", mode="before")
    @classmethod
    def _rule_for_every_layer(cls, value: Any) -> Any:
        """`rules: fa` is shorthand for `rules: {"*": fa}`."""
        return {"*": value} if isinstance(value, str) else value

    def stage_errors(self) -> list[str]:
        """What makes the stages of this spec not fit together."""
        if self.model is not None:
            return self._model_run_errors()
        if self.rules is not None:
            return ["rules: rules by glob are for a model's layers; a searched or given genotype takes its rules "
                    "from space.rules and the genotype"]
        if self.search is not None and self.genotype is not None:
            return ["search: give either a search section or a genotype, not both"]
        if self.search is None and self.genotype is None:
            return ["search: missing; give a search section, a genotype to retrain, or a model to train"]
        return []

    def _model_run_errors(self) -> list[str]:
        errors = [f"model: give either a model or a {field}, not both" for field in ("search", "genotype")
                  if getattr(self, field) is not None]
        if self.retrain is None:
            errors.append("retrain: a model run trains the model, so retrain cannot be null")
        else:
            errors += [f"retrain.{field}: builds a genotype's network, not a model (leave it out; the model's "
                       "options shape it)" for field in GENOTYPE_NETWORK_FIELDS
                       if getattr(self.retrain, field) not in (RetrainSpec.model_fields[field].default,
                                                               MODEL_RUN_VALUES.get(field))]
        return errors

    def plugin_refs(self) -> Iterator[tuple[str, str, PluginRef]]:
        """(spec path, plugin kind, reference) for every plugin the spec names."""
        yield "dataset", "dataset", self.dataset
        for i, rule in enumerate(self.space.rules):
            yield f"space.rules[{i}]", "rule", rule
        for field in FixedRules.model_fields:
            if (ref := getattr(self.space.fixed_rules, field)) is not None:  # None: plain layers
                yield f"space.fixed_rules.{field}", "rule", ref
        if self.search is not None:
            yield "search", "search", self.search
        for glob, rule in (self.rules or {}).items():
            yield rule_path(glob), "rule", rule
        for i, attack in enumerate(self.evaluation.attacks):
            yield f"evaluation.attacks[{i}]", "attack", attack
        for i, logger in enumerate(self.loggers):
            yield f"loggers[{i}]", "logger", logger

    def run_dir(self) -> Path:
        return Path(self.output.dir.replace("{name}", self.name))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; what `resolved_spec.json` of a run holds."""
        return self.model_dump(mode="json")


# -- loading -------------------------------------------------------------------------------------


class DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKey(f"key '{key}' is given twice, on lines {seen[key]} and {line}")
            seen.setdefault(key, line)
        return super().construct_mapping(node, deep)


def _duplicate_keys_refused(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"key '{twice[0]}' is given twice in one object")
    return dict(pairs)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"file not found: {path.resolve()}"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([f"not UTF-8 text (byte {exc.start}): save the spec as UTF-8"], str(path)) from None
    except OSError as exc:
        raise BionasError(f"cannot read spec file {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_duplicate_keys_refused)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data, runs no code
    except (yaml.YAMLError, json.JSONDecodeError, ValueError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise SpecError([f"not valid {kind}: {' '.join(str(exc).split())}"], str(path)) from None
    if not isinstance(data, dict):
        raise SpecError([f"the top level must be a mapping of sections, got {type(data).__name__}"], str(path))
    return data


def load_spec(
    source: str | Path | dict[str, Any] | Spec,
    overrides: dict[str, Any] | None = None,
    registry: Registry | None = None,
    recorded: bool = False,
) -> Spec:
    """Read (YAML, JSON, dict) and validate a spec in two phases; raises SpecError listing every problem.

    `overrides` replaces top-level fields before validation (the CLI's --device). A genotype to retrain
    is read and checked by `bionas.space.genotype.spec_genotype`, which `bionas validate` and every
    run call: the models it names sit above the spec. `recorded`: the resolved spec of a run that
    happened (resolved_spec.json), read for what it ran: a retrain cutout as large as the image, which
    runs before the data set owned the cutout recorded, is not refused there.
    """
    if isinstance(source, Spec):
        data, label = source.model_dump(), None
    elif isinstance(source, dict):
        data, label = source, None
    else:
        data, label = read_spec_file(source), str(source)
    data = {**data, **(overrides or {})}
    try:
        spec = Spec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_pydantic_errors(err), label) from None
    registry = registry or get_registry()
    errors = spec.stage_errors() + resolve_plugins(spec, registry)
    errors += cross_errors(spec, registry)
    if not any(error.startswith("dataset") for error in errors):  # the data set's defaults are known
        errors += resolve_retrain(spec, registry, recorded)
    if errors:
        raise SpecError(errors, label)
    return spec


def resolve_plugins(spec: Spec, registry: Registry) -> list[str]:
    """Phase 2: every named plugin exists; its options validate. Fills option defaults in place."""
    errors = []
    search_cls = None  # resolved once here; an unknown or clashing name is already an error above
    for path, kind, ref in spec.plugin_refs():
        try:
            cls = registry.get_class(kind, ref.name)
        except PluginError as exc:
            errors.append(f"{path}.name: {exc}")
            continue
        if kind == "search":
            search_cls = cls
        if kind == "logger" and (missing := cls.unavailable()):  # before the run, not when it first logs
            errors.append(f"{path}.name: {missing}")
        try:
            options = cls.Options.model_validate(ref.options)
        except ValidationError as err:
            errors += format_pydantic_errors(err, prefix=f"{path}.options")
            continue
        ref.options = options.model_dump(mode="json")
        errors += [f"{path}.{message}" for message in cls.spec_errors(options, spec)]
    for i, op in enumerate(spec.space.ops):
        try:
            registry.get_class("op", op)
        except PluginError as exc:
            errors.append(f"space.ops[{i}]: {exc}")
    if search_cls is not None:
        space = resolve_space(spec.space, search_cls)
        errors += partial_channel_errors(space.channels, space.partial_channels)
    if spec.model is not None:
        errors += model_errors(spec, registry)
    return errors


def resolve_retrain(spec: Spec, registry: Registry, recorded: bool = False) -> list[str]:
    """Fill the retrain's run-dependent defaults in place (`RetrainSpec.with_defaults`: the data set's
    cutout; a model's lack of auxiliary head and drop path); refuse a cutout that covers the whole image,
    unless the spec is `recorded` (a run's record of what it did)."""
    if spec.retrain is None or (recorded and spec.retrain.cutout is not None):
        return []
    cls = registry.get_class("dataset", spec.dataset.name)  # it and its options resolved in phase 2
    options = cls.Options.model_validate(spec.dataset.options)
    spec.retrain = spec.retrain.with_defaults(cls.retrain_cutout, spec.model is not None)
    side = cls.image_side(options)
    if side is not None and spec.retrain.cutout >= side:
        return [f"retrain.cutout: {spec.retrain.cutout} is not smaller than the {side}x{side} images of "
                f"{spec.dataset.name}: a cutout square that size can blank a whole image; give less than {side} "
                "(0 = off)"]
    return []


def rule_path(glob: str) -> str:
    """The spec path of one glob's rule: rules['layer1.*']."""
    return f"rules[{glob!r}]"


# Layer names do not depend on the data: a model is checked as built for these.
CHECK_INFO = DatasetInfo(num_classes=10, channels=3, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)


def built_for_check(model: Model) -> torch.nn.Module:
    """The model built without allocating its weights (on the meta device), on the CPU when that fails:
    an unknown or refused constructor option raises here, as it would in the run."""
    try:
        with torch.device("meta"):
            return model.build(CHECK_INFO)
    except Exception:  # some constructors read values back from their tensors, which meta tensors have not
        return model.build(CHECK_INFO)


def model_errors(spec: Spec, registry: Registry) -> list[str]:
    """Phase 2 for `model` and `rules`: the model exists, its options validate and build it, every glob gives
    some layer its rule. Fills the option defaults of a model plugin in place."""
    ref = spec.model
    try:
        model = registry.create_model(ref.name, ref.options)
    except PluginError as exc:
        return [f"model.name: {exc}"]
    except SpecError as exc:
        return [f"model.options.{error}" if ":" in error.split(" ")[0] else f"model.options: {error}"
                for error in exc.errors]
    if not model.family:  # a family's options are its constructor's keyword arguments, passed as given
        ref.options = model.options.model_dump(mode="json")
    try:
        network = built_for_check(model)
    except Exception as exc:  # a third-party constructor: whatever it raises is the answer
        return [f"model.options: {ref.name} cannot be built with these options: {one_line(exc)}"]
    layers = [name for name, _ in wrappable_layers(network)]
    return [f"{rule_path(glob)}: {why}" for glob, why in glob_problems(layers, list(spec.rules or {})).items()]


def cross_errors(spec: Spec, registry: Registry) -> list[str]:
    """What the sections of a valid spec say that does not fit together, found before any work starts."""
    errors = []
    if spec.evaluation.attacks and spec.retrain is None:
        errors.append("evaluation.attacks: the attacks run on the retrained network, and retrain is null; "
                      "give a retrain section or remove the attacks")
    for i, attack in enumerate(spec.evaluation.attacks):
        if attack.eps is None:
            continue
        try:
            cls = registry.get_class("attack", attack.name)
        except PluginError:
            continue  # reported by resolve_plugins
        if cls.budget != "eps":
            errors.append(f"evaluation.attacks[{i}].eps: attack '{attack.name}' has no eps budget (its budget is "
                          f"{cls.budget}); remove eps, or set its {cls.budget} in options")
            continue
        norm = attack.options.get("norm", "linf")
        errors += [f"evaluation.attacks[{i}].eps[{j}]: {error}" for j, eps in enumerate(attack.eps)
                   if (error := pixel_budget_error(eps, norm))]
    errors += memory_errors(spec)
    return errors


# Bytes per parameter a training step holds at least: weights, gradients, momentum (float32).
BYTES_PER_PARAMETER = 12


def memory_errors(spec: Spec) -> list[str]:
    """Refuse channel counts whose weights alone cannot fit in this machine's memory, before allocating.

    A lower bound: every cell of a DARTS network preprocesses its two inputs with 1x1 convolutions of
    at least C x C weights (C its initial channels; later cells have 2C and 4C), and nothing else is
    counted (no edge, no activation); so a spec it refuses cannot run here."""
    available = physical_memory()
    if available is None:
        return []
    networks = ([("retrain", spec.retrain.channels, spec.retrain.cells)]
                if spec.retrain is not None and spec.model is None else [])  # a model run sizes its own network
    if spec.search is not None:
        networks.insert(0, ("space", spec.space.channels, spec.space.cells))
    errors = []
    for section, channels, cells in networks:
        needed = BYTES_PER_PARAMETER * cells * 2 * channels**2
        if needed > available:
            errors.append(f"{section}.channels: {channels} channels need at least {needed / 2**30:,.0f} GiB for "
                          f"the weights of the {'supernet' if section == 'space' else 'retrained network'} "
                          f"alone; this machine has {available / 2**30:,.0f} GiB")
    return errors


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


def partial_channel_errors(channels: int, partial_channels: int) -> list[str]:
    """Each mixed edge takes channels / partial_channels of the channels: K must divide them."""
    if channels % partial_channels == 0:
        return []
    return [f"space.channels: {channels} is not a multiple of partial_channels {partial_channels} "
            "(each mixed edge takes channels / partial_channels of them)"]


# -- JSON schema ---------------------------------------------------------------------------------


def _plugin_union(registry: Registry, kind: str, base: type[PluginRef]) -> Any:
    """The type of a plugin reference in the schema: a union over installed plugins, keyed by name.

    With one plugin there is no union to discriminate; with none, the generic reference.
    """
    infos = registry.list(kind)
    if not infos:
        return base
    models = []
    for info in infos:
        title = kind.capitalize() + "".join(part.capitalize() for part in re.split(r"[-_.]", info.name))
        # A subclass only to give the schema a readable name: every plugin's class is "Options".
        options = create_model(f"{title}Options", __base__=info.cls.Options, __doc__=info.cls.Options.__doc__)
        description = f"Options of {kind} '{info.name}'."
        if any(f.is_required() for f in options.model_fields.values()):
            options_field = (options, Field(description=description))
        else:
            options_field = (options, Field(default_factory=options, description=description))
        models.append(
            create_model(
                title,
                __base__=base,
                __doc__=info.description,
                name=(Literal[info.name], Field(description=info.description)),
                options=options_field,
            )
        )
    names = Literal[tuple(info.name for info in infos)]  # string shorthand
    if len(models) == 1:
        return Union[names, models[0]]
    return Union[names, Annotated[Union[tuple(models)], Field(discriminator="name")]]


def spec_model(registry: Registry | None = None) -> type[Spec]:
    """Spec with every plugin reference typed by the installed plugins' options (for the schema)."""
    registry = registry or get_registry()
    rule = _plugin_union(registry, "rule", PluginRef)
    op_names = registry.names("op")
    fixed = create_model(
        "FixedRules",
        __base__=FixedRules,
        **{f: (rule | None, Field(default_factory=i.default_factory, description=i.description))
           for f, i in FixedRules.model_fields.items()},
    )
    space_fields = {
        "rules": (list[rule], SpaceSpec.model_fields["rules"]),
        "fixed_rules": (fixed, SpaceSpec.model_fields["fixed_rules"]),
    }
    if op_names:
        space_fields["ops"] = (list[Literal[tuple(op_names)]], SpaceSpec.model_fields["ops"])
    space = create_model("SpaceSpec", __base__=SpaceSpec, **space_fields)
    rule_names = registry.names("rule")
    rule_name_type = Literal[tuple(rule_names)] if rule_names else str
    evaluation = create_model(
        "EvaluationSpec",
        __base__=EvaluationSpec,
        attacks=(list[_plugin_union(registry, "attack", AttackSpec)], EvaluationSpec.model_fields["attacks"]),
    )
    return create_model(
        "Spec",
        __base__=Spec,
        dataset=(_plugin_union(registry, "dataset", PluginRef), Spec.model_fields["dataset"]),
        space=(space, Field(default_factory=space, description=Spec.model_fields["space"].description)),
        search=(_plugin_union(registry, "search", SearchSpec) | None, Spec.model_fields["search"]),
        loggers=(list[_plugin_union(registry, "logger", PluginRef)], Spec.model_fields["loggers"]),
        rules=(dict[str, rule] | rule_name_type | None, Spec.model_fields["rules"]),  # or one rule's name
        evaluation=(
            evaluation,
            Field(default_factory=evaluation, description=Spec.model_fields["evaluation"].description),
        ),
    )


def spec_json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON schema of a spec, including every installed plugin's options."""
    schema = spec_model(registry).model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bionas run spec"
    return schema


__all__ = ["Spec", "load_spec", "spec_json_schema", "Fractional", "parse_fraction"]
