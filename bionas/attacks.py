"""Adversarial attacks: the Attack base, threat models, and the machinery every attack shares.

An attack maps (model, images in [0, 1], labels) to adversarial images in
[0, 1] within its budget; the model maps [0, 1] images to logits
(normalization lives inside it, so budgets are in pixel space).

Every attack, through `Attack.run`:
* puts the model in eval mode for the attack and restores each module's mode;
* never modifies its inputs, and returns detached tensors;
* is deterministic given its seed (a `torch.Generator`, never the global RNG);
* reports the work it did per image (gradient steps or model queries) and its
  threat model, so a report can say what kind of robustness a number means.

Gradient attacks take their gradients through `bionas.exact_gradients` by
default ("exact"); "rule" goes through the learning rules' own feedback path,
a separate threat model whose numbers are not a robustness claim.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from bionas.errors import BionasError
from bionas.graphs import StepGraph
from bionas.plugin import Plugin, PluginOptions
from bionas.rules import exact_gradients
from bionas.training import eval_mode

WHITE_BOX_EXACT = "white-box (exact gradients)"
WHITE_BOX_RULE = "white-box (rule gradients)"
BLACK_BOX = "black-box (score queries)"
RULE_GRADIENT_NOTE = (
    "white-box (rule gradients) is a separate threat model: gradients through the learning rules' own "
    "feedback path, not the model's true gradient. Its numbers are NOT a robustness claim."
)

GradientSource = Literal["exact", "rule"]
Norm = Literal["linf", "l2"]

# Slack allowed by budget checks: float32 rounding of x + delta - x.
BUDGET_ATOL = 1e-6
BUDGET_RTOL = 1e-5


class AttackError(BionasError):
    """An attack that cannot run, or that returned images outside [0, 1] or outside its budget."""


def transfer_threat_model(surrogate: str) -> str:
    return f"transfer (surrogate: {surrogate})"


@dataclass(frozen=True)
class AttackResult:
    """What `Attack.run` returns: the adversarial images and the work spent on each."""

    adversarial: torch.Tensor  # detached, same shape as the images, in [0, 1]
    work: torch.Tensor  # float, one per image: gradient steps or model queries (NaN: not reported)
    unit: str  # "steps", "queries", "surrogate steps", ...


class Attack(Plugin):
    """`attack(model, images, labels)` -> adversarial images in [0, 1] within the budget.

    The model maps [0, 1] images to logits (normalization lives inside it).

    Subclasses implement `perturb(model, images, labels, generator) -> (adversarial,
    work per image)`; `run` wraps it with everything the contract above promises.
    A subclass that only overrides `__call__` still works (its work is reported as
    unknown). Class attributes describe the attack to an evaluation:
    * `family`: "white-box", "black-box" or "transfer";
    * `budget`: the option an eps sweep sets ("eps"), or another budget ("pixels"), or None;
    * `work_unit`: what `work` counts;
    * `one_step`: a single-step attack (FGSM), compared against iterative ones.

    An attack crafted on another model (transfer) says so with `needs_surrogate`; the
    pipeline then trains one (the same genotype with backprop) and hands it over with
    `with_surrogate(model, label)`.

    Under runtime.cuda_graphs the evaluation hands the setting over with `with_cuda_graphs(True, batch_size)`;
    an iterative attack then runs each iteration as a replay of a `step_graph` (PGD, APGD; docs/attacks.md).
    """

    kind: ClassVar[str] = "attack"
    family: ClassVar[str] = "white-box"
    budget: ClassVar[str | None] = "eps"
    work_unit: ClassVar[str] = "steps"
    one_step: ClassVar[bool] = False
    # runtime.cuda_graphs (with_cuda_graphs): replay each iteration; pad batches to graph_batch images
    cuda_graphs: bool = False
    graph_batch: int | None = None
    graph_backend: Any = None  # StepGraph's capture backend (None: CUDA's); the CPU tests put a stand-in here

    def __init__(self, options: Any = None, /, **kwargs: Any):
        super().__init__(options, **kwargs)
        if self.budget == "eps" and self.budget_value is not None:
            error = pixel_budget_error(float(self.budget_value), self.norm)
            if error:
                raise AttackError(f"attack '{self.name}' option eps: {error}")

    @classmethod
    def spec_errors(cls, options: PluginOptions, spec: Any) -> list[str]:
        if cls.budget != "eps" or getattr(options, "eps", None) is None:
            return []
        error = pixel_budget_error(float(options.eps), getattr(options, "norm", "linf"))
        return [f"options.eps: {error}"] if error else []

    # -- description ---------------------------------------------------------------------------

    @property
    def label(self) -> str:
        """Short name in tables: the plugin name, its variant (`pgd-dlr`), and a norm other than linf."""
        norm = self.norm
        return f"{self.variant} ({norm})" if norm and norm != "linf" else self.variant

    @property
    def variant(self) -> str:
        """The plugin name plus what distinguishes a variant of the attack (a loss); used by `label`."""
        return self.name

    @property
    def gradient(self) -> str | None:
        """ "exact" or "rule" for gradient attacks, else None."""
        return getattr(self.options, "gradient", None) if self.family == "white-box" else None

    @property
    def threat_model(self) -> str:
        if self.family == "white-box":
            return WHITE_BOX_RULE if self.gradient == "rule" else WHITE_BOX_EXACT
        if self.family == "black-box":
            return BLACK_BOX
        return self.family

    @property
    def is_robustness_claim(self) -> bool:
        """False for threat models whose numbers say nothing about robustness (rule gradients)."""
        return self.threat_model != WHITE_BOX_RULE

    @property
    def norm(self) -> str | None:
        """The norm of an eps budget ("linf", "l2"), None for other budgets."""
        if self.budget != "eps":
            return None
        return getattr(self.options, "norm", "linf")

    @property
    def budget_value(self) -> Any:
        return getattr(self.options, self.budget) if self.budget else None

    @property
    def seed(self) -> int:
        """The attack's own seed option (0 when it has none); mixed into every run's seed."""
        return getattr(self.options, "seed", 0)

    @property
    def needs_surrogate(self) -> bool:
        """True when the attack crafts its examples on a surrogate model it has not been given."""
        return False

    def with_surrogate(self, model: nn.Module, label: str | None = None) -> Attack:
        """The attack with `model` as its surrogate (`label` names it in reports); an attack that
        takes no surrogate returns itself."""
        return self

    def with_options(self, **changes: Any) -> Attack:
        """A copy with some options changed (validated); other attributes (a surrogate) are kept."""
        new = copy.copy(self)
        new.options = type(self)(self.options.model_dump(), **changes).options
        new._graphs = {}  # the captured iterations closed over the old options
        return new

    def with_cuda_graphs(self, enabled: bool, batch_size: int | None = None) -> Attack:
        """A copy whose iterations run as CUDA graph replays (`enabled`, on CUDA tensors), every batch padded to
        `batch_size` images so that one capture serves batches of every size up to it."""
        new = copy.copy(self)
        new.cuda_graphs, new.graph_batch, new._graphs = enabled, batch_size, {}
        return new

    @property
    def replays(self) -> bool:
        """Whether iterations replay: under cuda_graphs with exact gradients (a rule's own backward keeps
        host-side state, e.g. brsf's clock, so rule gradients run eagerly)."""
        return self.cuda_graphs and self.gradient != "rule"

    def step_graph(self, model: nn.Module, name: str, fn: Callable) -> StepGraph:
        """The StepGraph of this attack's step `name` on `model` (made once, then reused across batches; `fn` closes
        over the model and the options only: everything else it reads is an input)."""
        graphs = self.__dict__.setdefault("_graphs", {})
        key = (id(model), name)
        if key not in graphs:  # the model is kept with its graph: its id cannot be reused while cached
            graphs[key] = (model, StepGraph(fn, self.replays, backend=self.graph_backend))
        return graphs[key][1]

    def padded(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Under cuda_graphs, each tensor (N x ...) padded to `graph_batch` rows with copies of its first: every
        operation of an attack is per image (the model is in eval mode), so the padding changes no real row,
        and the caller keeps the first N rows (the mask). Unchanged without graphs, off CUDA (unless a stand-in
        backend captures) or for a larger batch."""
        size = self.graph_batch
        on_device = self.graph_backend is not None or any(t.device.type == "cuda" for t in tensors)
        if not self.replays or size is None or not on_device:  # nothing to capture: nothing to pad for
            return tensors
        return tuple(torch.cat([t, t[:1].expand(size - len(t), *t.shape[1:])]) if 0 < len(t) < size else t
                     for t in tensors)

    # -- running -------------------------------------------------------------------------------

    def perturb(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attack itself: (adversarial images, work per image). `images` is a private copy."""
        raise NotImplementedError(f"{type(self).__qualname__} implements neither perturb() nor __call__()")

    def run(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, seed: int | None = None):
        """Attack a batch; returns an AttackResult. `seed` overrides the `seed` option."""
        check_batch(images, labels)
        if seed is None:
            seed = self.seed
        x = images.detach().clone()
        y = labels.detach().to(images.device)
        with eval_mode(model):
            if type(self).__call__ is not Attack.__call__:  # a plugin that implements __call__ only
                adversarial = self(model, x, y)
                work = torch.full((len(x),), float("nan"))
            else:
                generator = torch.Generator(device=images.device).manual_seed(int(seed))
                adversarial, work = self.perturb(model, x, y, generator)
        return AttackResult(adversarial.detach(), work.detach().float().cpu(), self.work_unit)

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.run(model, images, labels).adversarial

    # -- budget --------------------------------------------------------------------------------

    def budget_excess(self, images: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
        """Per image, by how much the adversarial image leaves the budget (<= 0: within it)."""
        if self.budget != "eps":
            return torch.zeros(len(images), device=images.device)
        eps = float(self.budget_value)
        size = lp_norm(adversarial - images, self.norm)
        return size - (eps + BUDGET_ATOL + BUDGET_RTOL * eps)

    def check_result(self, images: torch.Tensor, adversarial: torch.Tensor) -> None:
        """Raise AttackError if the adversarial images are not valid: shape, [0, 1], budget."""
        if adversarial.shape != images.shape:
            raise AttackError(
                f"attack '{self.label}' returned shape {tuple(adversarial.shape)} for {tuple(images.shape)}"
            )
        if not torch.isfinite(adversarial).all() or adversarial.min() < 0 or adversarial.max() > 1:
            raise AttackError(f"attack '{self.label}' returned images outside [0, 1]")
        excess = self.budget_excess(images, adversarial)
        if (excess > 0).any():
            raise AttackError(
                f"attack '{self.label}' left its budget ({self.budget}={self.budget_value}) on "
                f"{int((excess > 0).sum())} of {len(images)} images (by up to {float(excess.max()):.3g})"
            )


# -- helpers for attack implementations ----------------------------------------------------------


def check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not torch.is_tensor(images) or not images.is_floating_point() or images.dim() < 2:
        raise AttackError("attacks take a float tensor of images, N x ...")
    if not torch.is_tensor(labels) or labels.shape != images.shape[:1]:
        raise AttackError(f"expected {len(images)} labels, got shape {tuple(getattr(labels, 'shape', ()))}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise AttackError(
            "attacks take images in [0, 1] (pixel space); normalization belongs inside the model, "
            f"got values in [{float(images.min()):.3g}, {float(images.max()):.3g}]"
        )


def gradient_context(model: nn.Module, gradient: str):
    """The context a forward and backward run in: exact -> `exact_gradients(model)`; rule -> as trained."""
    if gradient == "rule":
        return contextlib.nullcontext()
    if gradient != "exact":
        raise AttackError(f"gradient must be 'exact' or 'rule', got {gradient!r}")
    return exact_gradients(model)


def input_gradient(
    model: nn.Module,
    images: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    gradient: str = "exact",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d sum(loss) / d images, logits, per-image loss), through the chosen gradient source.

    `loss_fn(logits)` returns one loss per image. Only the input gradient is
    computed; parameters' `.grad` are left untouched. A rule that sends no error
    to the input (hebbian, with gradient="rule") gives a zero gradient.
    """
    x = images.detach().requires_grad_(True)
    with torch.enable_grad(), gradient_context(model, gradient):
        logits = model(x)
        losses = loss_fn(logits)
        grad = None
        if losses.requires_grad:
            (grad,) = torch.autograd.grad(losses.sum(), x, allow_unused=True)
    if grad is None:  # a rule with no error path to the input (hebbian): its gradient is zero
        grad = torch.zeros_like(x)
    return grad.detach(), logits.detach(), losses.detach()


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(len(t), -1)


def per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`values` (one per image) shaped to broadcast against `like` (N x ...)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def pixel_budget_error(eps: float, norm: str | None) -> str | None:
    """Images are in [0, 1]: an L-inf budget of 1 or more allows any image, so it was written in 0..255
    units (8 for 8/255). L2 budgets grow with the image size and may exceed 1."""
    if norm == "linf" and eps >= 1:
        return (f"{eps:g} is not a budget in [0, 1] pixel units (an L-inf budget of 1 or more allows any "
                f"image); did you mean {eps:g}/255?")
    return None


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image norm of a perturbation ("linf" or "l2")."""
    if norm == "linf":
        return _flat(delta).abs().amax(dim=1) if delta.numel() else delta.new_zeros(len(delta))
    if norm == "l2":
        return _flat(delta).norm(dim=1)
    raise AttackError(f"unknown norm {norm!r}; use linf or l2")


def normalized(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit size: sign for linf, grad / |grad|_2 for l2."""
    if norm == "linf":
        return grad.sign()
    return grad / per_image(lp_norm(grad, "l2").clamp_min(1e-12), grad)


def project(images: torch.Tensor, adversarial: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Onto the eps-ball around `images`, then into [0, 1] (in pixel space; the clamp keeps the ball)."""
    delta = adversarial - images
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (eps / lp_norm(delta, "l2").clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * per_image(scale, delta)
    return (images + delta).clamp(0.0, 1.0)


def random_start(images: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random point of the eps-ball around `images` (clamped to [0, 1])."""
    if norm == "linf":
        noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        return project(images, images + (2 * noise - 1) * eps, eps, norm)
    direction = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    direction = normalized(direction, "l2")
    u = torch.rand(len(images), generator=generator, device=images.device, dtype=images.dtype)
    radius = eps * u ** (1.0 / images[0].numel())
    return project(images, images + direction * per_image(radius, images), eps, norm)


def predict(model: nn.Module, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits without gradients, in chunks of `batch_size` images (all at once when None)."""
    with torch.no_grad():
        if batch_size is None or len(images) <= batch_size:
            return model(images)
        return torch.cat([model(chunk) for chunk in images.split(batch_size)])
