"""Does the search beat random? Each strategy against plain random genotypes, equal retrain budget, mnist5k.

    python benchmarks/search_vs_random.py --out runs/search-vs-random            # 4 arms x seeds 0-4, 2 at a time
    python benchmarks/search_vs_random.py --out runs/svr --seeds 0 1 2 3 4 5 6 7 --workers 1
    python benchmarks/search_vs_random.py --out runs/svr --table                  # only the table, from the runs

Every arm is the quickstart (examples/quickstart.yaml: its data set, joint
space, supernet, search budget of 2 epochs of batch 24, retrain recipe of 6
epochs, test split) with only the search replaced, and without its attacks:

* `darts-1`: the quickstart's own search, first-order DARTS;
* `egnas`: EG-NAS with what this budget forces: `start_epoch` 1 (the
  quickstart's warm-up), `population` 10, `samplings` 2, `fitness_batch_size`
  64, and the quickstart's unpartitioned supernet (`partial_channels` 1: its
  default of 4 would leave one channel of four to the operations);
* `random-ws`: random search with weight sharing, 2 epochs, `samples` 50,
  `eval_batches` 2, `top_k` 5;
* `random`: random search `mode: plain`, one uniformly drawn genotype, no search.

Every run is a whole `bionas.run` in OUT/ARM/seed-N (the run's seed is N for
every arm: data split, initialisation, batch order), so the genotypes of all
arms are retrained by the same recipe and tested on the same 1,000 digits, and
a killed benchmark continues where it stopped (finished runs are read back).
The table gives, per arm, the test accuracy mean ± sample std over the seeds,
the search's wall seconds, how many genotypes differ, and for each searching
arm the paired difference to `random` (per seed, then mean ± std). Each
process uses one torch thread (the spec's `runtime.threads: 1`).
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # benchmark this checkout

import yaml  # noqa: E402

QUICKSTART = ROOT / "examples" / "quickstart.yaml"
ARMS = {
    "darts-1": None,  # the quickstart's search as it ships
    "egnas": {"name": "egnas", "arch_fraction": 0.5,
              "options": {"epochs": 2, "batch_size": 24, "lr": 0.1, "start_epoch": 1, "population": 10,
                          "samplings": 2, "fitness_batch_size": 64, "bn_recalibration": 20}},
    "random-ws": {"name": "random", "arch_fraction": 0.5,
                  "options": {"mode": "weight_sharing", "epochs": 2, "batch_size": 24, "lr": 0.1, "samples": 50,
                              "eval_batches": 2, "top_k": 5}},
    "random": {"name": "random", "options": {"mode": "plain"}},
}


def arm_spec(base: dict, arm: str, seed: int) -> dict:
    spec = copy.deepcopy(base)
    spec.update(name=f"search-vs-random-{arm}", seed=seed)
    spec["evaluation"] = {**spec.get("evaluation", {}), "attacks": []}
    if ARMS[arm] is not None:
        spec["search"] = copy.deepcopy(ARMS[arm])
    if arm == "egnas":
        spec["space"] = {**spec["space"], "partial_channels": 1}
    return spec


def run_one(base: dict, arm: str, seed: int, out: Path) -> dict:
    """One arm at one seed as a whole run (resumed when its directory holds one); its results."""
    import torch

    import bionas
    from bionas.rundir import read_json

    torch.set_num_threads(1)
    run_dir = out / arm / f"seed-{seed}"
    if not (run_dir / "results.json").exists():
        bionas.run(arm_spec(base, arm, seed), run_dir, resume=run_dir.exists(), quiet=True)
    return read_json(run_dir / "results.json")


def mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * scale:.{digits}f}"
    return f"{statistics.mean(values) * scale:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def table(results: dict[str, dict[int, dict]], seeds: list[int]) -> str:
    random_acc = {s: r["test_accuracy"] for s, r in results.get("random", {}).items()}
    lines = ["| search | test accuracy (%) | paired difference to random (points) | search s | distinct genotypes "
             "| seeds |", "|---|---|---|---|---|---|"]
    for arm in ARMS:
        rows = results.get(arm, {})
        done = [s for s in seeds if s in rows]
        accs = [rows[s]["test_accuracy"] for s in done]
        paired = [rows[s]["test_accuracy"] - random_acc[s] for s in done if s in random_acc]
        search_s = [rows[s]["search_seconds"] for s in done if rows[s].get("search_seconds") is not None]
        diff = "-" if arm == "random" else mean_std(paired)
        lines.append(f"| {arm} | {mean_std(accs)} | {diff} | {mean_std(search_s, 1, 0)} | "
                     f"{len({rows[s]['genotype'] for s in done})} | {len(done)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Directory of the runs (OUT/ARM/seed-N).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--spec", type=Path, default=QUICKSTART, help="The recipe every arm shares.")
    parser.add_argument("--workers", type=int, default=2, help="Runs at a time, one torch thread each.")
    parser.add_argument("--table", action="store_true", help="Only print the table of the finished runs.")
    args = parser.parse_args()
    base = yaml.safe_load(args.spec.read_text())
    results: dict[str, dict[int, dict]] = {arm: {} for arm in args.arms}
    if args.table:
        import json

        for arm in args.arms:
            for seed in args.seeds:
                path = args.out / arm / f"seed-{seed}" / "results.json"
                if path.exists():
                    results[arm][seed] = json.loads(path.read_text())
    else:
        jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
        # spawn: a forked child would inherit the parent's torch thread pools
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, base, arm, seed, args.out): (arm, seed) for arm, seed in jobs}
            for future in as_completed(futures):
                arm, seed = futures[future]
                try:
                    row = results[arm][seed] = future.result()
                except Exception as error:  # the other runs still make their rows
                    print(f"{arm} seed {seed} failed: {error!r}", flush=True)
                    continue
                print(f"{arm} seed {seed}: test {row['test_accuracy']:.2%}, search {row['search_seconds']} s, "
                      f"{row['genotype']}", flush=True)
    print(f"\nspec {args.spec.name}, seeds {args.seeds}, mean ± sample std over the seeds\n")
    print(table(results, args.seeds))


if __name__ == "__main__":
    main()
