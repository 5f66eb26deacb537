"""Images per second of every first-party attack at its published budget, and beside torchattacks.

    PYTHONPATH=.:plugins python benchmarks/attacks.py [--device cpu] [--batch 100] [--eps 0.3]
        [--only pgd,square] [--repeats 3] [--threads 1] [--no-reference] [--chunks auto,128,1024]

The model is a 784-256-256-10 MLP trained with backprop for a few seconds on the
embedded MNIST digits; the batch is `--batch` test digits it classifies
correctly. Budgets (REFERENCES.md): fgsm one step; pgd 10 steps, alpha
2.5 eps / steps, random start; apgd 100 steps; square 5000 queries (p_init
0.8); onepixel population 400 x up to 100 generations, F = 0.5; transfer = pgd
on a second, separately trained MLP. eps defaults to the MNIST standard 0.3.

Black-box attacks stop on an image once it is fooled, so their speed depends on
how robust the model is: the first table shows the mean work per image beside the
rate. "model calls" counts forward passes of the target model and "images/call"
their mean batch size.

The second table runs torchattacks' implementation of each attack it has (fgsm,
pgd, apgd-ce, apgd-dlr, square, onepixel) on the same model, images, seed and
budget, in the same process: each round times both, in alternating order, and
the table gives median images/s, their ratio and both robust accuracies.
onepixel is compared at the budget of the one-pixel timing in issue 16
(population 150, 30 generations, 10 images): torchattacks attacks one image at a
time. Its population P becomes P // len(bounds) * len(bounds) members (len(bounds)
= 3 for one pixel of a one-channel image), so 150 gives 150 members on both sides.

`--chunks` times onepixel's `chunk` (perturbed images per forward pass) on this
MLP and on a small CNN (conv 16 and 32 channels, where activations are large),
with torchattacks on each for scale.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import bionas  # noqa: E402
from mnist_mlp import mlp, mnist, train  # noqa: E402

BUDGETS = {
    "fgsm": {},
    "pgd": {"steps": 10},
    "apgd": {"steps": 100},
    "square": {"queries": 5000, "p_init": 0.8},
    "onepixel": {"population": 400, "generations": 100, "mutation": 0.5},
    "transfer": {"attack": "pgd", "attack_options": {"steps": 10}},
}

# The side-by-side comparison: (row, bionas attack, its options); eps is added to those with an eps budget.
COMPARED = {
    "fgsm": [("fgsm", "fgsm", {})],
    "pgd": [("pgd", "pgd", {"steps": 10})],
    "apgd": [("apgd-ce", "apgd", {"steps": 100, "loss": "ce"}), ("apgd-dlr", "apgd", {"steps": 100, "loss": "dlr"})],
    "square": [("square", "square", {"queries": 5000, "p_init": 0.8})],
    "onepixel": [("onepixel", "onepixel", {"population": 150, "generations": 30})],
}
ONEPIXEL_IMAGES = 10


def reference_attack(torchattacks, model, name: str, options: dict):
    """torchattacks' attack at the same budget as bionas's `name` with `options`."""
    eps = options.get("eps")
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if name == "pgd":
        steps = options["steps"]
        return torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
    if name == "apgd":
        return torchattacks.APGD(model, eps=eps, steps=options["steps"], loss=options["loss"], seed=0)
    if name == "square":
        # torchattacks does not count the stripes' query: n_queries = queries - 1 for the same budget.
        return torchattacks.Square(model, eps=eps, n_queries=options["queries"] - 1, p_init=options["p_init"], seed=0)
    if name == "onepixel":
        return torchattacks.OnePixel(model, pixels=1, steps=options["generations"], popsize=options["population"])
    raise KeyError(name)


def small_cnn(train_x, train_y) -> nn.Module:
    """conv 3x3 16 - pool - conv 3x3 32 - pool - linear, one epoch of Adam: large activations per image."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip
    return train(model, train_x, train_y, epochs=1)


def auto_chunk(model, images) -> int:
    """The chunk onepixel chooses for this model by default."""
    from bionas_attacks.onepixel import PROBE, ChunkedForward

    forward = ChunkedForward(model, None)
    with torch.no_grad():
        forward(images[:1].expand(PROBE, *images.shape[1:]))
    return forward.chunk


def correct_subset(model, x, y, count):
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    return x[correct][:count], y[correct][:count]


def robust_accuracy(model, adversarial, labels) -> float:
    with torch.no_grad():
        return (model(adversarial).argmax(1) == labels).float().mean().item()


def timed(run, device) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    adversarial = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, adversarial


def side_by_side(implementations, model, x, y, repeats, device):
    """{name: (median seconds, robust accuracy of the first round)}; each round alternates the order."""
    seconds = {name: [] for name in implementations}
    robust = {}
    names = list(implementations)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            torch.manual_seed(0)  # torchattacks' pgd draws its start from the global RNG
            spent, adversarial = timed(lambda: implementations[name](x, y), device)
            seconds[name].append(spent)
            robust.setdefault(name, robust_accuracy(model, adversarial, y))
    return {name: (statistics.median(seconds[name]), robust[name]) for name in names}


def published_budgets(args, model, surrogate, x, y, device, repeats):
    calls: list[int] = []
    hook = model.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    print(
        "| attack | budget | seconds | images/s | mean work per image | robust in batch | model calls | images/call |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.only.split(","):
        options = dict(BUDGETS[name])
        if name != "onepixel":
            options["eps"] = args.eps
        attack = bionas.get_attack(name, **options)
        if name == "transfer":
            attack = attack.with_surrogate(surrogate, label="second bp MLP")
        times = []
        for _ in range(repeats):
            calls.clear()
            spent, result = timed(lambda: attack.run(model, x, y), device)
            times.append(spent)
        seconds = statistics.median(times)
        attack.check_result(x, result.adversarial)
        attack_calls = len(calls)
        robust = robust_accuracy(model, result.adversarial, y)
        budget = ", ".join(f"{k} {v}" for k, v in BUDGETS[name].items()) or "1 step"
        per_call = f"{sum(calls[:attack_calls]) / attack_calls:.0f}" if attack_calls else "-"
        print(
            f"| {name} | {budget} | {seconds:.2f} | {len(x) / seconds:.1f} | {result.work.mean():.1f} {result.unit} "
            f"| {robust:.0%} | {attack_calls} | {per_call} |"
        )
    hook.remove()


def against_torchattacks(args, torchattacks, model, x, y, device, repeats):
    print(
        "| attack | budget | images | bionas images/s | torchattacks images/s | speed ratio (bionas / torchattacks) "
        "| bionas robust | torchattacks robust |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for family in args.only.split(","):
        for row, name, options in COMPARED.get(family, []):
            options = dict(options)
            if name != "onepixel":
                options["eps"] = float(bionas.get_attack(name, eps=args.eps).options.eps)
            images, labels = (x[:ONEPIXEL_IMAGES], y[:ONEPIXEL_IMAGES]) if name == "onepixel" else (x, y)
            ours = bionas.get_attack(name, **options)
            theirs = reference_attack(torchattacks, model, name, options)
            result = side_by_side(
                {"bionas": lambda a, b: ours(model, a, b), "torchattacks": lambda a, b: theirs(a, b)},
                model, images, labels, repeats, device,
            )  # fmt: skip
            (s_ours, r_ours), (s_theirs, r_theirs) = result["bionas"], result["torchattacks"]
            budget = ", ".join(f"{k} {v}" for k, v in options.items() if k != "eps") or "1 step"
            print(
                f"| {row} | {budget} | {len(images)} | {len(images) / s_ours:.1f} | {len(images) / s_theirs:.1f} "
                f"| {s_theirs / s_ours:.2f} | {r_ours:.1%} | {r_theirs:.1%} |"
            )


def chunk_sweep(args, torchattacks, models, test_x, test_y, device, repeats):
    options = dict(COMPARED["onepixel"][0][2])
    print(
        f"onepixel, population {options['population']}, {options['generations']} generations, "
        f"{ONEPIXEL_IMAGES} images; median seconds of {repeats}"
    )
    print()
    print("| model | implementation | seconds | images/s | speed vs torchattacks |")
    print("|---|---|---|---|---|")
    for model_name, model in models.items():
        x, y = correct_subset(model, test_x, test_y, ONEPIXEL_IMAGES)
        implementations = {}
        for chunk in args.chunks:
            attack = bionas.get_attack("onepixel", chunk=chunk, **options)
            name = f"bionas chunk {chunk}" if chunk else f"bionas chunk auto ({auto_chunk(model, x)})"
            implementations[name] = lambda a, b, attack=attack: attack(model, a, b)
        if torchattacks is not None:
            theirs = reference_attack(torchattacks, model, "onepixel", options)
            implementations["torchattacks"] = lambda a, b: theirs(a, b)
        result = side_by_side(implementations, model, x, y, repeats, device)
        reference = result.get("torchattacks", (None,))[0]
        for name, (seconds, _) in result.items():
            ratio = f"{reference / seconds:.2f}" if reference else "-"
            print(f"| {model_name} | {name} | {seconds:.2f} | {len(x) / seconds:.1f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=100, help="images attacked at once")
    parser.add_argument("--eps", default="0.3", help="linf budget (MNIST standard: 0.3)")
    parser.add_argument("--only", default=",".join(BUDGETS), help="comma-separated attacks")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; tables give medians")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-reference", action="store_true", help="skip the torchattacks comparison")
    parser.add_argument(
        "--chunks",
        type=lambda s: [None if c == "auto" else int(c) for c in s.split(",")],
        default=None,
        help="onepixel chunk sweep, e.g. auto,128,1024 (auto: the default, sized by the model's activations)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torchattacks = None
    if not args.no_reference:
        try:
            import torchattacks
        except ImportError:
            print("torchattacks is not installed: no reference columns (make install-dev installs it).")

    train_x, train_y, test_x, test_y = mnist()
    model = train(mlp(0), train_x, train_y, epochs=3).to(device)
    surrogate = train(mlp(1), train_x, train_y, epochs=3, seed=1).to(device)
    clean = robust_accuracy(model, test_x.to(device), test_y.to(device))
    x, y = correct_subset(model, test_x.to(device), test_y.to(device), args.batch)
    print(
        f"device {device} ({'no GPU in this run' if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
        f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}"
        f"{', torchattacks ' + torchattacks.__version__ if torchattacks else ''}; model 784-256-256-10 MLP, clean "
        f"accuracy {clean:.1%}; batch of {len(x)} correctly classified test digits; eps {args.eps}; "
        f"median of {args.repeats} rounds"
    )
    print()
    if args.chunks:
        models = {"784-256-256-10 MLP": model, "small CNN": small_cnn(train_x, train_y).to(device)}
        chunk_sweep(args, torchattacks, models, test_x.to(device), test_y.to(device), device, args.repeats)
        return
    published_budgets(args, model, surrogate, x, y, device, args.repeats)
    if torchattacks is not None:
        print()
        against_torchattacks(args, torchattacks, model, x, y, device, args.repeats)


if __name__ == "__main__":
    main()
