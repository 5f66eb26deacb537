"""The plugin manager: entry-point loading, and one name -> class table per plugin kind.

Plugins are found in the `bionas` entry-point group. Each is a module (or any
object) whose `@bionas.hookimpl` functions register classes. Loading is lazy
and happens once per process; `reset()` forgets it (tests use this).

Failure policy:
* a plugin that raises on import, or registers a malformed class, is
  reported (entry point, distribution, reason) and skipped; the rest keep
  working. `BIONAS_STRICT_PLUGINS=1` makes it fatal.
* `BIONAS_DISABLE_PLUGINS=a,b` skips entry points by name.
* two plugins registering one name of one kind is an error naming both
  distributions, raised when that name is used.
* two distributions with one entry-point name: the second is reported as a
  problem naming both, and skipped.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pluggy

from bionas import hookspecs
from bionas.__about__ import PROJECT
from bionas.attacks import Attack
from bionas.data.base import Dataset
from bionas.errors import PluginError, one_line
from bionas.model import Model, split_model_name
from bionas.ops import Operation
from bionas.plugin import Plugin, check_plugin_class
from bionas.rules.base import LearningRule
from bionas.search.base import SearchStrategy
from bionas.tracking import Logger

hookimpl = pluggy.HookimplMarker(PROJECT)

STRICT_ENV = "BIONAS_STRICT_PLUGINS"
DISABLE_ENV = "BIONAS_DISABLE_PLUGINS"


@dataclass(frozen=True)
class Kind:
    name: str  # "rule"
    singular: str  # "rule", "search strategy": used in messages
    plural: str  # "rules", "search strategies"
    hook: str  # "bionas_register_rules"
    base: type[Plugin]


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("rule", "rule", "rules", "bionas_register_rules", LearningRule),
        Kind("op", "op", "ops", "bionas_register_ops", Operation),
        Kind("search", "search strategy", "search strategies", "bionas_register_search_strategies", SearchStrategy),
        Kind("dataset", "dataset", "datasets", "bionas_register_datasets", Dataset),
        Kind("attack", "attack", "attacks", "bionas_register_attacks", Attack),
        Kind("logger", "logger", "loggers", "bionas_register_loggers", Logger),
        Kind("model", "model", "models", "bionas_register_models", Model),
    )
}


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin class, as `bionas plugins list` shows it."""

    name: str
    kind: str
    description: str
    distribution: str
    version: str
    plugin: str  # the entry point (or in-process registration) that registered it
    cls: type[Plugin]

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "distribution": self.distribution,
            "version": self.version,
            "plugin": self.plugin,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
        }


@dataclass(frozen=True)
class PluginProblem:
    """A plugin that could not be loaded, or a class it registered that was refused."""

    plugin: str
    distribution: str
    version: str
    reason: str

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' ({self.distribution} {self.version}) was skipped: {self.reason}"


@dataclass
class _Source:
    """Where a registered plugin object came from."""

    name: str
    distribution: str
    version: str


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


class Registry:
    """Owns the pluggy PluginManager and the per-kind tables built from its hooks."""

    def __init__(self, distributions: set[str] | None = None):
        """`distributions` restricts entry points to those distributions (e.g. {"bionas"} for the docs)."""
        self.strict = _env_flag(STRICT_ENV)
        self.disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._load_problems: list[PluginProblem] = []
        self.notices: list[str] = []  # warnings that are no plugin's problem (a misspelled disabled name)
        self._table_problems: list[PluginProblem] = []
        self._sources: dict[str, _Source] = {}
        self._tables: dict[str, dict[str, PluginInfo]] = {}
        self._conflicts: dict[tuple[str, str], list[PluginInfo]] = {}
        self._distributions = distributions
        self._load_entry_points()
        self._build_tables()
        self.raise_if_strict()

    # -- loading -----------------------------------------------------------------------------

    @property
    def problems(self) -> list[PluginProblem]:
        """Plugins skipped at load, and classes refused at registration."""
        return self._load_problems + self._table_problems

    def _problem(self, source: _Source, reason: str, at_load: bool = True) -> None:
        # Only recorded: raising here would leave the tables half-built (see raise_if_strict).
        problem = PluginProblem(source.name, source.distribution, source.version, reason)
        (self._load_problems if at_load else self._table_problems).append(problem)

    def raise_if_strict(self) -> None:
        if self.strict and self.problems:
            raise PluginError(f"{self.problems[0]} ({STRICT_ENV} is set)")

    def _load_entry_points(self) -> None:
        seen = set()
        owners: dict[str, _Source] = {}  # entry-point name -> the first distribution claiming it
        entry_points = importlib.metadata.entry_points(group=PROJECT)
        self.notices = [unknown_name_message(f"plugin in {DISABLE_ENV}", "entry points", name,
                                             sorted({ep.name for ep in entry_points})) + " It disables nothing."
                        for name in sorted(self.disabled - {ep.name for ep in entry_points})]
        for ep in entry_points:
            dist = getattr(ep, "dist", None)
            source = _Source(ep.name, dist.name if dist else "?", dist.version if dist else "?")
            # One distribution can be visible twice on sys.path (e.g. an editable install
            # beside a checkout); load each entry point once.
            key = (ep.name, ep.value, source.distribution)
            if key in seen or ep.name in self.disabled:
                continue
            if self._distributions is not None and source.distribution not in self._distributions:
                continue
            seen.add(key)
            owner = owners.setdefault(ep.name, source)
            if owner.distribution != source.distribution:
                # Disabling the name would drop both, so one of them has to go.
                self._problem(source, f"entry point '{ep.name}' is also provided by {owner.distribution} "
                              f"{owner.version}; uninstall one of them")
                continue
            try:
                plugin = ep.load()
            # A broken plugin must not take the others down, nor end the process (sys.exit, Ctrl-C raised
            # by the module itself at import).
            except (Exception, SystemExit, KeyboardInterrupt) as exc:
                self._problem(source, f"import of '{ep.value}' failed: {one_line(exc)}")
                continue
            self._add(plugin, source)

    def _add(self, plugin: object, source: _Source) -> None:
        if self.pm.is_registered(plugin) or self.pm.has_plugin(source.name):
            return
        try:
            self.pm.register(plugin, name=source.name)
        except Exception as exc:
            self._problem(source, f"not a valid plugin: {one_line(exc)}")
            return
        self._sources[source.name] = source

    def register_plugin(self, plugin: object, name: str | None = None) -> str:
        """Register an in-process plugin object (a module or instance with hookimpls)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if self.pm.has_plugin(name):
            raise PluginError(f"a plugin named '{name}' is already registered")
        self._add(plugin, _Source(name, "(in-process)", "-"))
        self._build_tables()
        try:
            self.raise_if_strict()
        except PluginError:
            self.unregister_plugin(name)  # leave the registry as it was, without the refused plugin
            raise
        return name

    def unregister_plugin(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._sources.pop(name, None)
        self._load_problems = [p for p in self._load_problems if p.plugin != name]
        self._build_tables()

    # -- tables ------------------------------------------------------------------------------

    def _build_tables(self) -> None:
        self._tables = {kind: {} for kind in KINDS}
        self._conflicts = {}
        self._table_problems = []
        for kind in KINDS.values():
            caller = getattr(self.pm.hook, kind.hook)
            for impl in caller.get_hookimpls():
                source = self._sources[impl.plugin_name]
                try:
                    impl.function(register=partial(self._register_class, kind, source))
                except Exception as exc:
                    self._problem(source, f"{kind.hook} failed: {one_line(exc)}", at_load=False)

    def _register_class(self, kind: Kind, source: _Source, cls: type) -> None:
        try:
            check_plugin_class(cls, kind.base)
        except PluginError as exc:  # refuse this class, keep the plugin's others
            self._problem(source, f"{kind.name} refused: {exc}", at_load=False)
            return
        info = PluginInfo(
            cls.name, kind.name, cls.description.strip(), source.distribution, source.version, source.name, cls
        )
        table = self._tables[kind.name]
        if cls.name in table and table[cls.name].cls is not cls:
            self._conflicts.setdefault((kind.name, cls.name), [table[cls.name]]).append(info)
            return
        table[cls.name] = info

    # -- queries -----------------------------------------------------------------------------

    def list(self, kind: str | None = None) -> list[PluginInfo]:
        """Registered plugins by kind, then name."""
        kinds = [check_kind(kind)] if kind else list(KINDS)
        return [info for k in kinds for _, info in sorted(self._tables[k].items())]

    def in_registration_order(self, kind: str) -> list[PluginInfo]:
        """The plugins of one kind in the order their plugins registered them (entry points in the order
        Python lists them, each plugin's classes in its own order): the order of the default space."""
        return list(self._tables[check_kind(kind)].values())

    def names(self, kind: str) -> list[str]:
        return sorted(self._tables[check_kind(kind)])

    def info(self, kind: str, name: str) -> PluginInfo:
        kind = check_kind(kind)
        if (kind, name) in self._conflicts:
            owners = " and ".join(f"'{i.distribution}' (plugin '{i.plugin}')" for i in self._conflicts[kind, name])
            raise PluginError(f"{kind} '{name}' is registered by both {owners}; uninstall or disable one")
        table = self._tables[kind]
        if name not in table:
            raise PluginError(unknown_name_message(KINDS[kind].singular, KINDS[kind].plural, name, sorted(table)))
        return table[name]

    def get_class(self, kind: str, name: str) -> type[Plugin]:
        return self.info(kind, name).cls

    def create(self, kind: str, name: str, **options: Any) -> Plugin:
        return self.get_class(kind, name)(**options)

    def create_model(self, name: str, options: dict[str, Any]) -> Model:
        """The model `name` (see `get_model`): a family's architecture when the name has a '/'."""
        family, architecture = split_model_name(name)
        if family not in self._tables["model"] and ("model", family) not in self._conflicts:
            raise PluginError(self._unknown_model(name, family, architecture))
        cls = self.get_class("model", family)
        if architecture is None:
            if cls.family:
                raise PluginError(f"model '{name}' is a family of models: name one, as in '{name}/resnet18'")
            return cls(**options)
        if not cls.family:
            raise PluginError(f"model '{family}' is not a family of models: write '{family}' without "
                              f"'{name[len(family):]}'")
        return cls.for_architecture(architecture, options)

    def _unknown_model(self, name: str, family: str, architecture: str | None) -> str:
        """Suggestions for an unknown model: the families holding that architecture name, or close names."""
        infos = self.list("model")
        if architecture is None:
            in_families = [f"{i.name}/{name}" for i in infos if i.cls.family and name in i.cls.architectures()]
            if in_families:
                return f"unknown model '{name}'. Did you mean: {', '.join(in_families)}?"
        # a name with a '/' names a family; one without, a model
        candidates = [i.name for i in infos if i.cls.family == (architecture is not None)]
        close = difflib.get_close_matches(family, candidates, n=3, cutoff=0.5)
        message = f"unknown model {'family ' if architecture is not None else ''}'{family}'."
        if close:
            message += f" Did you mean: {', '.join(close)}?"
        known = [f"{i.name}/<name>" if i.cls.family else i.name for i in infos]
        return message + f" Known models: {', '.join(known) if known else '(none installed)'}."

    def conflicts(self) -> list[str]:
        return [
            f"{kind} '{name}' is registered by " + " and ".join(f"'{i.distribution}'" for i in infos)
            for (kind, name), infos in sorted(self._conflicts.items())
        ]

    def command_hooks(self) -> list[tuple[str, Callable[..., None]]]:
        """(plugin name, its bionas_register_commands function) of every plugin that adds commands."""
        return [(impl.plugin_name, impl.function) for impl in self.pm.hook.bionas_register_commands.get_hookimpls()]

    def add_problem(self, plugin: str, reason: str) -> None:
        """Record a problem of a registered plugin found outside the registry (adding its commands failed)."""
        self._problem(self._sources[plugin], reason)


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise PluginError(unknown_name_message("plugin kind", "plugin kinds", kind, list(KINDS)))
    return kind


def unknown_name_message(singular: str, plural: str, name: str, known: list[str]) -> str:
    """`unknown rule 'usff'. Did you mean: usf? Known rules: bp, fa, usf.`"""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    message = f"unknown {singular} '{name}'."
    if close:
        message += f" Did you mean: {', '.join(close)}?"
    message += f" Known {plural}: {', '.join(known) if known else '(none installed)'}."
    return message


# -- the process-wide registry -------------------------------------------------------------------

_registry: Registry | None = None


def get_registry() -> Registry:
    global _registry
    if _registry is None:
        _registry = Registry()
    return _registry


def reset() -> None:
    """Forget the loaded plugins; the next use loads the entry points again (reads the env again)."""
    global _registry
    _registry = None


def list_plugins(kind: str | None = None) -> list[PluginInfo]:
    """Every registered plugin, or those of one kind (rule, op, search, dataset, attack, logger, model)."""
    return get_registry().list(kind)


def get_rule(name: str, **options: Any) -> LearningRule:
    """The learning rule `name`, made with `options` (validated against its Options)."""
    return get_registry().create("rule", name, **options)


def get_op(name: str, **options: Any) -> Operation:
    """The search-space operation `name`, made with `options`."""
    return get_registry().create("op", name, **options)


def get_search(name: str, **options: Any) -> SearchStrategy:
    """The search strategy `name`, made with `options`."""
    return get_registry().create("search", name, **options)


def get_dataset(name: str, **options: Any) -> Dataset:
    """The dataset `name`, made with `options`."""
    return get_registry().create("dataset", name, **options)


def get_attack(name: str, **options: Any) -> Attack:
    """The attack `name`, made with `options`."""
    return get_registry().create("attack", name, **options)


def get_logger(name: str, **options: Any) -> Logger:
    """The experiment logger `name`, made with `options`."""
    return get_registry().create("logger", name, **options)


def get_model(name: str, **options: Any) -> Model:
    """The model `name` made with `options`: a model plugin (`resnet20`), or an architecture of a family
    plugin (`timm/resnet18`, `torchvision/resnet18`) with `options` for its constructor."""
    return get_registry().create_model(name, options)
