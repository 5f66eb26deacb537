"""Transfer attack: adversarial examples crafted on a surrogate model, then shown to the target.

The base attack is any eps-budget attack (pgd by default) run on the surrogate;
the target model is never queried while crafting. The surrogate is a
checkpoint or run directory (`surrogate` option), or a model handed over in
code: `TransferAttack(...).with_surrogate(model, label="bp MLP")`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from torch import nn

import bionas
from bionas.attacks import AttackError, transfer_threat_model
from bionas.errors import PluginError, SpecError
from bionas.fractions import Fractional
from bionas.registry import get_registry


class TransferAttack(bionas.Attack):
    """Runs `attack` (with `attack_options`) on the surrogate; the target only sees the result."""

    name = "transfer"
    description = "Transfer attack: examples crafted with another attack on a surrogate model."
    family = "transfer"

    class Options(bionas.PluginOptions):
        attack: str = Field(
            default="pgd", description="The attack run on the surrogate (any attack with an eps budget)."
        )
        attack_options: dict[str, Any] = Field(default_factory=dict, description="Options of that attack.")
        eps: Fractional | None = Field(
            default=None,
            description="Budget; overrides attack_options.eps (an eps sweep sets it); null = the attack's own.",
        )
        surrogate: str | None = Field(
            default=None,
            description="Checkpoint or run directory of the surrogate (e.g. the same architecture trained with bp); "
            "null = a model given in code with with_surrogate().",
        )

        @model_validator(mode="after")
        def _base_attack_is_valid(self):
            if self.attack == "transfer":
                raise ValueError("attack: a transfer attack cannot transfer another transfer attack")
            try:
                cls = get_registry().get_class("attack", self.attack)
            except PluginError as exc:
                raise ValueError(f"attack: {exc}") from None
            try:
                base = cls(**self.attack_options)
            except SpecError as exc:
                raise ValueError("; ".join(f"attack_options.{line}" for line in exc.errors)) from None
            if base.budget != "eps":
                raise ValueError(f"attack: '{self.attack}' has no eps budget to transfer")
            return self

    surrogate_model: nn.Module | None = None
    surrogate_label: str | None = None

    @property
    def base(self) -> bionas.Attack:
        """The attack run on the surrogate, with this attack's eps when set."""
        o = self.options
        options = {**o.attack_options, **({"eps": o.eps} if o.eps is not None else {})}
        return bionas.get_attack(o.attack, **options)

    @property
    def label(self) -> str:
        return f"transfer ({self.base.label})"

    @property
    def norm(self) -> str | None:
        return self.base.norm

    @property
    def budget_value(self) -> Any:
        return self.base.options.eps

    @property
    def seed(self) -> int:  # attack_options.seed
        return self.base.seed

    @property
    def work_unit(self) -> str:  # type: ignore[override]
        return f"surrogate {self.base.work_unit}"

    @property
    def threat_model(self) -> str:
        source = self.surrogate_label or self.options.surrogate or "not set"
        return transfer_threat_model(source)

    @property
    def needs_surrogate(self) -> bool:
        return self.surrogate_model is None and not self.options.surrogate

    def with_surrogate(self, model: nn.Module, label: str | None = None) -> TransferAttack:
        """A copy that crafts its examples on `model` (`label` names it in reports)."""
        new = self.with_options()
        new.surrogate_model = model
        new.surrogate_label = label or type(model).__name__
        return new

    def _surrogate(self) -> nn.Module:
        if self.surrogate_model is not None:
            return self.surrogate_model
        if self.options.surrogate is None:
            raise AttackError(
                "the transfer attack has no surrogate: set its option surrogate to a checkpoint or run "
                "directory, or pass a model with TransferAttack(...).with_surrogate(model)"
            )
        from bionas.robustness.target import load_model

        self.surrogate_model = load_model(self.options.surrogate)[0]  # the network alone: no data is read
        self.surrogate_label = self.options.surrogate
        return self.surrogate_model

    def perturb(self, model, images, labels, generator):
        surrogate = self._surrogate()
        if surrogate is model:
            raise AttackError("the transfer surrogate is the attacked model itself; that is a white-box attack")
        # The base attack gets the seed this run was given.
        result = self.base.run(surrogate.to(images.device), images, labels, seed=generator.initial_seed())
        return result.adversarial, result.work
