"""One rank of a torchrun launch in tests/test_distributed.py: runs a spec with bionas.run, then writes
what this rank's network ended training with (parameters and non-BatchNorm buffers) for the test to compare."""

import sys

from safetensors.torch import save_file

import bionas.train
from bionas.distributed import world_from_env
from bionas.pipeline import run

captured = {}
original = bionas.train.retrain


def capturing_retrain(model, *args, **kwargs):
    result = original(model, *args, **kwargs)
    skip = ("running_mean", "running_var", "num_batches_tracked")  # per-rank statistics between broadcasts
    captured.update({k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if not k.endswith(skip)})
    return result


bionas.train.retrain = capturing_retrain
spec, out = sys.argv[1], sys.argv[2]
run(spec, quiet=True)
if captured:
    save_file(captured, f"{out}/rank{world_from_env().rank}.safetensors")
