"""The hook specifications of bionas. Hooks only *register things*; the engine owns the registries.

A plugin is a module (or any object) with functions marked `@bionas.hookimpl`,
named after these specs, exposed through the `bionas` entry-point group:

    [project.entry-points.bionas]
    my_plugin = "my_package"

Each `register` callback takes a class (not an instance) and may be called any
number of times. The class must subclass the matching base, carry a lowercase
`name`, a one-line `description` and a nested `Options` model (see
docs/plugins.md).
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from bionas.__about__ import PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def bionas_register_rules(register: Callable[[type], None]) -> None:
    """Register learning rules: `register(MyRule)` with MyRule a `bionas.LearningRule` subclass.

    A rule decides the error a wrapped Conv2d/Linear sends to the layer below and
    the update of its own parameters; the forward pass never changes.
    """


@hookspec
def bionas_register_ops(register: Callable[[type], None]) -> None:
    """Register search-space operations: `register(MyOp)` with MyOp a `bionas.Operation` subclass.

    An operation builds itself for (channels, stride, rule, affine) and every
    conv inside it learns by that rule.
    """


@hookspec
def bionas_register_search_strategies(register: Callable[[type], None]) -> None:
    """Register search strategies: `register(MyStrategy)` with a `bionas.SearchStrategy` subclass.

    A strategy searches the supernet's architecture and returns a SearchResult.
    """


@hookspec
def bionas_register_datasets(register: Callable[[type], None]) -> None:
    """Register datasets: `register(MyDataset)` with MyDataset a `bionas.Dataset` subclass.

    A dataset reports its info and gives train, val and test splits of
    (float image in [0, 1], int label).
    """


@hookspec
def bionas_register_attacks(register: Callable[[type], None]) -> None:
    """Register adversarial attacks: `register(MyAttack)` with a `bionas.Attack` subclass.

    An attack maps (model, images in [0, 1], labels) to adversarial images in
    [0, 1] within its budget.
    """


@hookspec
def bionas_register_loggers(register: Callable[[type], None]) -> None:
    """Register experiment loggers: `register(MyLogger)` with MyLogger a `bionas.Logger` subclass.

    A logger receives a run's records, parameters and output files on rank 0
    (metrics.jsonl, TensorBoard, MLflow).
    """


@hookspec
def bionas_register_commands(app) -> None:
    """Add CLI commands to `app`, the root `typer.Typer` of the `bionas` command.

    Use `@app.command()` or `app.add_typer(...)`. A command may not replace a
    built-in one: such a command is ignored with a warning.
    """
