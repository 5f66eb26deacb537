"""What `runtime: auto` should mean on this device: the search step and the retrain step with bionas's
`auto` settings, and with one setting flipped at a time (bionas.runtime.AUTO_AMP, AUTO_CHANNELS_LAST,
AUTO_COMPILE, AUTO_CUDA_GRAPHS).

    python benchmarks/runtime_auto.py                                  # CPU, 1 thread, the quickstart's sizes
    python benchmarks/runtime_auto.py --device cuda --size small --budget 90
    python benchmarks/runtime_auto.py --device cuda --size published --budget 300

Both steps run through bionas's own loops (benchmarks/real_steps.py): a darts first-order search (an
architecture step and a weight step per batch) of a supernet, and the retrain of the BioNAS-DARTS
genotype (auxiliary head, drop path, clipping), on synthetic 3-channel data, with a bionas.Runtime whose
settings are those `auto` resolves to on the device, or those with one of amp (bf16 autocast <-> off),
channels_last, compile and cuda_graphs (CUDA only) flipped. Each variant runs in its own process within
its own time box (benchmarks/timebox.py; `--box` seconds, all within `--budget`): a variant that fails or
outlives its box says so in its row, and the others go on. Sizes (search: space, channels, cells, batch,
image size; retrain: channels, cells, batch):

    quickstart   the quickstart's space (6 candidates), C=4, 3 cells, batch 24, 16x16; retrain C=8, 3 cells, batch 32
    small        the paper's space (22 candidates), C=8, 5 cells, batch 32, 32x32; retrain C=16, 8 cells, batch 64
    published    the paper's space, C=16, 8 cells, batch 64, 32x32; retrain C=36, 20 cells, batch 96

The table gives per variant the wall seconds of a steady search step (epoch 2 of 2; `--steps` steps an
epoch) and retrain images/s (the last of 3 epochs), each as a ratio to `auto`, and the wall seconds to the
end of the first step (capture or compilation included). It is laid out for docs/search.md.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # --budget counts from here: imports and all

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(HERE)]  # this checkout, and the benchmarks beside

import torch  # noqa: E402

import real_steps  # noqa: E402
from bionas.runtime import AUTO_AMP  # noqa: E402
from timebox import Part, emit_row, emit_values, failure, run_parts  # noqa: E402

SETTINGS = ("amp", "channels_last", "compile", "cuda_graphs")
# search: (space, channels, cells, batch, image size); retrain: (channels, cells, batch, image size)
SIZES = {"quickstart": (("quickstart", 4, 3, 24, 16), (8, 3, 32, 16)),
         "small": (("paper", 8, 5, 32, 32), (16, 8, 64, 32)),
         "published": (("paper", 16, 8, 64, 32), (36, 20, 96, 32)),
         "tiny": (("quickstart", 4, 1, 4, 8), (4, 2, 8, 16))}


def auto_settings(device: torch.device) -> dict:
    """What bionas resolves each runtime setting's `auto` to on `device` (amp as "bf16" or "off")."""
    resolved = real_steps.runtime(device)
    return {"amp": "bf16" if AUTO_AMP.get(device.type, False) else "off", "channels_last": resolved.channels_last,
            "compile": resolved.compile, "cuda_graphs": resolved.cuda_graphs}


def variants(device: torch.device) -> dict[str, dict]:
    """`auto`, then each setting flipped from it (cuda_graphs on CUDA only): name -> the Runtime's settings."""
    auto = auto_settings(device)
    out = {"auto": auto}
    for setting in SETTINGS:
        if setting == "cuda_graphs" and device.type != "cuda":
            continue
        value = auto[setting]
        flipped = ("off" if value == "bf16" else "bf16") if setting == "amp" else not value
        shown = flipped if isinstance(flipped, str) else "on" if flipped else "off"
        out[f"{setting} {shown}"] = {**auto, setting: flipped}
    return out


def describe(settings: dict) -> str:
    return ", ".join(f"{k} {'on' if v is True else 'off' if v is False else v}" for k, v in settings.items())


def run_variant(args, name: str) -> None:
    """Inside a variant's process: time both steps, print a row for each and their values."""
    settings = variants(args.device)[name]
    run = real_steps.runtime(args.device, **settings)
    (space, channels, cells, batch, image), (r_channels, r_cells, r_batch, r_image) = SIZES[args.size]
    values = {}
    try:
        timing = real_steps.search_timing(run, channels=channels, cells=cells, batch=batch, steps=args.steps,
                                          space=real_steps.QUICKSTART_SPACE if space == "quickstart" else None,
                                          image_size=image)
        values["search"] = {"step": timing.step, "first_step": timing.first_step}
        emit_row(f"{name}: search step", f"{timing.step:.4f} s/step, first step {timing.first_step:.1f} s")
    except Exception as exc:  # the retrain may still run
        emit_row(f"{name}: search step", failure(exc))
    try:
        timing = real_steps.retrain_timing(run, backprop=False, channels=r_channels, cells=r_cells, batch=r_batch,
                                           steps=args.steps, epochs=3, image_size=r_image)
        values["retrain"] = {"images_per_second": timing.images_per_second, "first_step": timing.first_step}
        emit_row(f"{name}: retrain", f"{timing.images_per_second:,.1f} images/s, first step {timing.first_step:.1f} s")
    except Exception as exc:
        emit_row(f"{name}: retrain", failure(exc))
    emit_values(**{name: values})


def table(device: torch.device, results: dict[str, dict], statuses: dict[str, str]) -> str:
    """The markdown table of every variant against `auto` (`-` where a variant did not measure it)."""
    auto = results.get("auto", {})
    lines = ["| variant | settings | search s/step | / auto | search first step s | retrain images/s | / auto "
             "| retrain first step s |", "|---|---|---|---|---|---|---|---|"]
    for name, settings in variants(device).items():
        if name not in results and name not in statuses:
            continue  # not run (--only)
        values = results.get(name, {})
        search, retrain = values.get("search", {}), values.get("retrain", {})
        step, rate = search.get("step"), retrain.get("images_per_second")
        base_step, base_rate = auto.get("search", {}).get("step"), auto.get("retrain", {}).get("images_per_second")
        cells = [f"{step:.4f}" if step else "-", f"{step / base_step:.2f}x" if step and base_step else "-",
                 f"{search['first_step']:.1f}" if "first_step" in search else "-",
                 f"{rate:,.1f}" if rate else "-", f"{rate / base_rate:.2f}x" if rate and base_rate else "-",
                 f"{retrain['first_step']:.1f}" if "first_step" in retrain else "-"]
        status = statuses.get(name, "ok")
        label = name if status == "ok" else f"{name} ({status})"
        lines.append(f"| {label} | {describe(settings)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="quickstart", choices=list(SIZES), help="see above (tiny: checks the "
                        "script)")
    parser.add_argument("--steps", type=int, default=4, help="steps per epoch of both loops")
    parser.add_argument("--box", type=float, default=240.0, help="seconds for one variant (both steps)")
    parser.add_argument("--budget", type=float, default=1200.0, help="seconds for the whole run, from its start "
                        "(the variants get what is left after the imports, less a few seconds for the table)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--only", default=None, help="comma-separated variants to run (default: all), e.g. "
                        "'auto,compile on'")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # inside a variant's process
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    names = list(variants(args.device))
    args.variants = names if args.only is None else [v.strip() for v in args.only.split(",") if v.strip()]
    if unknown := [v for v in args.variants if v not in names]:
        parser.error(f"--only: unknown {', '.join(unknown)} (known: {', '.join(names)})")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant is not None:  # inside a variant's process
        run_variant(args, args.variant)
        return 0
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu"
    (space, channels, cells, batch, image), (r_channels, r_cells, r_batch, _) = SIZES[args.size]
    print(f"device {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); size {args.size}: "
          f"search {space} space C={channels}, {cells} cells, batch {batch}, {image}x{image}; retrain BioNAS-DARTS "
          f"C={r_channels}, {r_cells} cells, batch {r_batch}; {args.steps} steps an epoch", flush=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--device", str(args.device), "--size", args.size,
               "--steps", str(args.steps), "--threads", str(args.threads), "--variant"]
    parts = [Part(variant, [*command, variant], args.box) for variant in args.variants]
    outcomes = run_parts(parts, args.budget - (time.perf_counter() - START) - 3.0, show=lambda row: print(f"  {row.check}: {row.measured}", flush=True))
    results = {k: v for outcome in outcomes.values() for k, v in outcome.values.items()}
    print(table(args.device, results, {n: o.status for n, o in outcomes.items()}))
    print("values: " + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
