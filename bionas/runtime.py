"""Runtime: how a stage runs, apart from what it computes.

One frozen value the pipeline builds from the spec's `runtime` section, the
device and the torchrun world, and hands to the search and the retrain stage;
code that calls a strategy or `bionas.retrain.retrain` directly makes one:

    runtime = Runtime(device=torch.device("cuda"), quiet=True, log=records.append)
    strategy.search(supernet, data, runtime)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

Amp = Literal["auto", "bf16", "off"]

# What `runtime.channels_last: auto` means on each device type. CPU: measured (docs/search.md, "Search
# cost"): the supernet step 0.92x and the retrain step 1/1.6 of their NCHW time. CUDA: the layout cuDNN's
# bf16 convolutions are fastest in, the default there before; not yet re-measured through this switch.
# A device type not listed keeps the default layout.
AUTO_CHANNELS_LAST = {"cpu": True, "cuda": True}


def resolve_channels_last(setting: bool | str, device: torch.device) -> bool:
    """The spec's `runtime.channels_last` (True, False or "auto") on `device`."""
    if setting == "auto":
        return AUTO_CHANNELS_LAST.get(torch.device(device).type, False)
    return bool(setting)


@dataclass(frozen=True)
class Runtime:
    """Where and how fast a stage runs, in how many processes, and what it reports.

    * `device`: where the model and batches live.
    * `amp`: bf16 autocast: `auto` on CUDA only, `bf16` always, `off` never.
    * `channels_last`: the model and its inputs in channels_last memory format, in the search
      and the retrain (the pipeline resolves the spec's runtime.channels_last: resolve_channels_last).
    * `compile`: torch.compile the training forward: the retrained network's, the supernet's.
    * `rank`, `world_size`: this process in a torchrun launch (0 and 1 without one).
    * `workers`: DataLoader workers for data sets not held in memory (None: make_loader's default).
    * `quiet`: no progress bars.
    * `log`: receives one JSON-ready record per epoch (the pipeline writes them to metrics.jsonl).
    """

    device: torch.device = torch.device("cpu")
    amp: Amp = "auto"
    channels_last: bool = False
    compile: bool = False
    rank: int = 0
    world_size: int = 1
    workers: int | None = None
    quiet: bool = False
    log: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))  # "cpu" and torch.device("cpu") alike

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and talks."""
        return self.rank == 0

    def record(self, record: dict[str, Any]) -> None:
        """Hand one record to `log`, if there is one."""
        if self.log is not None:
            self.log(record)

    def with_changes(self, **changes: Any) -> Runtime:
        """A copy with some fields changed (e.g. another `log`)."""
        return replace(self, **changes)
