"""Each search strategy on the embedded MNIST data at a small fixed budget, then a short retrain.

    python benchmarks/search_mnist.py                          # defaults: 5 strategies x 3 seeds
    python benchmarks/search_mnist.py --strategies darts-1 random --epochs 3 --seeds 0
    python benchmarks/search_mnist.py --weight-init xavier_uniform keep   # both initialisations of the rules
    python benchmarks/search_mnist.py --threads 1 --workers 15  # 15 runs at a time on 16 cores

Search: the paper's joint space (DARTS's 8 ops x rules usf, brsf, frsf, fa: 22
candidates, fixed layers bp) on a small supernet, `--images` images of each
part of mnist5k's training split (3,500 images, halved by SearchData.split),
`--epochs` epochs with each strategy's published hyperparameters except the
ones a budget this small needs (batch size; EG-NAS's population, samplings and
start epoch; random search's number of samples), all printed. EG-NAS runs with
each alpha update (`egnas-double`: softmax(softmax(u)) as EG-NAS's code,
`egnas-single`: softmax(u)). `--weight-init` is the rules' `weight_init` option
(`xavier_uniform`, BioTorch's, the default; `keep`: PyTorch's default init),
for the supernet and the retrained network. Retrain: the derived network
(bionas.retrain.retrain: SGD momentum, cosine from `--retrain-lr`, no auxiliary
head, no drop path, no cutout) on the whole training split, the best epoch
chosen on the val split, whose weights are then tested once on the test split
(1,000 images). Each seed (`--seeds`) is the run's seed for every strategy:
data split, initialisation, batch order. The table gives mean +- sample
standard deviation over the seeds; `alpha change` is the mean over edges of
the standard deviation over candidates of (final alpha - initial alpha), how
differently the search moved the candidates of an edge. With `--workers` the
runs share the machine: their times are slower than alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # benchmark this checkout

import torch  # noqa: E402

import bionas  # noqa: E402
from bionas.checkpoint import load_state  # noqa: E402
from bionas.data import make_loader  # noqa: E402
from bionas.retrain import retrain  # noqa: E402
from bionas.rules import rule_name  # noqa: E402
from bionas.search import SearchData, resolve_space  # noqa: E402
from bionas.space import Network, SearchSpace, Supernet, count_parameters  # noqa: E402
from bionas.spec import RetrainSpec, SpaceSpec  # noqa: E402
from bionas.training import evaluate_accuracy, seed_everything  # noqa: E402

SHORT = {"none": "none", "max_pool_3x3": "max", "avg_pool_3x3": "avg", "skip_connect": "skip",
         "sep_conv_3x3": "sep3", "sep_conv_5x5": "sep5", "dil_conv_3x3": "dil3", "dil_conv_5x5": "dil5"}  # fmt: skip


def strategies(args) -> dict[str, tuple[str, dict]]:
    common = {"epochs": args.epochs, "batch_size": args.batch_size}
    return {
        "darts-1": ("darts", {**common, "order": "first"}),
        "darts-2": ("darts", {**common, "order": "second"}),
        # one CMA-ES update per epoch from the first: the published start (15) is beyond this budget
        **{f"egnas-{label}": ("egnas", {**common, "start_epoch": 0, "population": args.population, "samplings": 2,
                                       "fitness_batch_size": args.batch_size, "update": update})
           for label, update in (("double", "double_softmax"), ("single", "softmax"))},
        "random": ("random", {**common, "samples": args.samples, "eval_batches": 2, "top_k": 5}),
    }


def compact(genotype) -> str:
    def cell(edges):
        return " ".join(f"{SHORT.get(e.op, e.op)}{'/' + rule_name(e.rule) if e.rule else ''}({e.source})"
                        for e in edges)

    return f"N: {cell(genotype.normal)} / R: {cell(genotype.reduce)}"


def alpha_change(before: dict[str, torch.Tensor], supernet) -> float | None:
    """Mean over edges of the std over candidates of (final - initial alpha); None if no alpha moved."""
    deltas = [getattr(supernet, f"alphas_{kind}").detach() - start for kind, start in before.items()]
    change = torch.cat([d.std(dim=-1) for d in deltas]).mean().item()
    return change if change > 0 else None


def mean_std(values: list[float], fmt: str) -> str:
    """'mean +- std' over seeds (sample std; a single seed: the value)."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def run_one(label: str, weight_init: str, seed: int, args) -> dict:
    """Search with strategy `label` (rules with `weight_init`), retrain its genotype, test it: one seed's row."""
    torch.set_num_threads(args.threads)
    dataset = bionas.get_dataset("mnist5k")
    info = dataset.info
    device = torch.device("cpu")
    rules = [{"name": rule, "options": {"weight_init": weight_init}} for rule in ("usf", "brsf", "frsf", "fa")]
    space_spec = SpaceSpec(channels=args.channels, cells=args.cells, rules=rules)
    data = SearchData.split(dataset, 0.5, seed=seed)
    data.weights_indices, data.arch_indices = data.weights_indices[: args.images], data.arch_indices[: args.images]
    name, options = strategies(args)[label]
    strategy = bionas.get_search(name, **options)
    seed_everything(seed)
    space = SearchSpace(resolve_space(space_spec, type(strategy)))
    supernet = Supernet(space, info.num_classes, info.channels, info.mean, info.std)
    before = {kind: getattr(supernet, f"alphas_{kind}").detach().clone() for kind in ("normal", "reduce")}
    result = strategy.search(supernet, data, bionas.Runtime(device=device, quiet=True))
    genotype = result.genotype
    seed_everything(seed)
    model = Network(genotype, channels=args.retrain_channels, cells=args.retrain_cells, num_classes=info.num_classes,
                    in_channels=info.channels, mean=info.mean, std=info.std, image_size=info.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        trained = retrain(model, dataset, recipe(args), bionas.Runtime(device=device, quiet=True), seed=seed,
                          best_path=Path(tmp) / "best")
        retrain_seconds = time.perf_counter() - started
        model.load_state_dict(load_state(Path(tmp) / "best")[0]["model"])
    _, test_accuracy = evaluate_accuracy(model, make_loader(dataset, "test", 256, train=False), device)
    return {"strategy": f"{strategy!r}", "genotype": compact(genotype), "search_s": result.seconds,
            "params": count_parameters(model), "val": trained.best_val_accuracy, "best_epoch": trained.best_epoch,
            "test": test_accuracy, "retrain_s": retrain_seconds, "alpha_change": alpha_change(before, supernet)}


def recipe(args) -> RetrainSpec:
    return RetrainSpec(epochs=args.retrain_epochs, batch_size=64, channels=args.retrain_channels,
                       cells=args.retrain_cells, lr=args.retrain_lr, auxiliary=False, drop_path=0.0, cutout=0)


def run_all(args) -> dict[tuple[str, str], list[dict]]:
    """Every (strategy, weight_init, seed) run, in `--workers` processes; each printed as it ends."""
    jobs = [(label, init, seed) for label in args.strategies for init in args.weight_init for seed in args.seeds]
    rows: dict[tuple[str, str], dict[int, dict]] = {(label, init): {} for label, init, _ in jobs}

    def report(job, row):
        label, init, seed = job
        rows[label, init][seed] = row
        print(f"\n{label}, weight_init {init}, seed {seed}: {row['strategy']}\n{row['genotype']}\n"
              f"search {row['search_s']:.0f} s, retrain {row['retrain_s']:.0f} s, val {row['val']:.1%} "
              f"(epoch {row['best_epoch']}), test {row['test']:.1%}, alpha change {row['alpha_change']}", flush=True)

    if args.workers == 1:
        for job in jobs:
            report(job, run_one(*job, args))
    else:
        # spawn: a forked child would inherit the parent's torch thread pools
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, *job, args): job for job in jobs}
            for future in as_completed(futures):
                try:
                    report(futures[future], future.result())
                except Exception as error:  # the other runs still make their rows
                    print(f"\n{futures[future]} failed: {error!r}", flush=True)
    return {key: [by_seed[seed] for seed in args.seeds if seed in by_seed] for key, by_seed in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=["darts-1", "darts-2", "egnas-double", "egnas-single",
                                                            "random"])
    parser.add_argument("--epochs", type=int, default=2, help="search epochs")
    parser.add_argument("--images", type=int, default=96, help="images of each search part")
    parser.add_argument("--batch-size", type=int, default=32, help="search minibatch")
    parser.add_argument("--channels", type=int, default=8, help="supernet channels")
    parser.add_argument("--cells", type=int, default=3, help="supernet cells")
    parser.add_argument("--population", type=int, default=10, help="EG-NAS CMA-ES population")
    parser.add_argument("--samples", type=int, default=100, help="random search: architectures scored")
    parser.add_argument("--retrain-epochs", type=int, default=2)
    parser.add_argument("--retrain-channels", type=int, default=8)
    parser.add_argument("--retrain-cells", type=int, default=5)
    parser.add_argument("--retrain-lr", type=float, default=0.1, help="higher than DARTS's 0.025: 2 epochs")
    parser.add_argument("--weight-init", nargs="+", choices=["xavier_uniform", "keep"], default=["xavier_uniform"],
                        help="the rules' weight_init option (each one given is run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time, each in its own process")
    args = parser.parse_args()
    train_images = len(bionas.get_dataset("mnist5k").split("train"))
    header = (f"search: {args.images} + {args.images} images, supernet C={args.channels} cells={args.cells}, "
              f"{args.epochs} epochs, batch {args.batch_size}; retrain: C={args.retrain_channels} "
              f"cells={args.retrain_cells}, lr {args.retrain_lr}, {args.retrain_epochs} epochs on {train_images} "
              f"images; seeds {args.seeds}; torch threads {args.threads} per run, {args.workers} run(s) at a time")
    print(header)
    rows = run_all(args)
    print(f"\n{header}\n{len(args.seeds)} seeds ({' '.join(map(str, args.seeds))}), mean ± std")
    print("\n| strategy | rules' weight_init | test acc (%) | val acc (%) | test acc per seed (%) | params | "
          "alpha change | search s | retrain s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (label, init), runs in rows.items():
        if not runs:
            continue
        def column(key, fmt, scale=1.0, runs=runs):
            return mean_std([r[key] * scale for r in runs], fmt)

        changes = [r["alpha_change"] for r in runs]
        change = "n/a" if None in changes else mean_std(changes, ".1e")
        per_seed = " ".join(f"{100 * r['test']:.1f}" for r in runs)
        print(f"| {label} | {init} | {column('test', '.1f', 100)} | {column('val', '.1f', 100)} | {per_seed} | "
              f"{column('params', ',.0f')} | {change} | {column('search_s', '.0f')} | {column('retrain_s', '.0f')} |")


if __name__ == "__main__":
    main()
