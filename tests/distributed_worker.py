"""One rank of a torchrun launch in tests/test_distributed.py: runs a spec with bionas.run, then writes
what this rank's supernet and network ended each stage with (parameters, alphas and non-BatchNorm
buffers) for the test to compare across ranks."""

import sys

from safetensors.torch import save_file

import bionas.pipeline.train_stage
from bionas.distributed import world_from_env
from bionas.pipeline import run
from bionas.search.epochs import EpochSearch

captured = {}
SKIP = ("running_mean", "running_var", "num_batches_tracked")  # per-rank statistics between broadcasts


def capture(stage, model):
    captured[stage] = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
                       if not k.endswith(SKIP)}


original_retrain, original_search = bionas.pipeline.train_stage.retrain, EpochSearch.search


def retrain(model, *args, **kwargs):
    result = original_retrain(model, *args, **kwargs)
    capture(kwargs["best_metadata"]["stage"], model)  # retrain or surrogate
    return result


def search(self, supernet, *args, **kwargs):
    result = original_search(self, supernet, *args, **kwargs)
    capture("search", supernet)
    return result


bionas.pipeline.train_stage.retrain, EpochSearch.search = retrain, search
spec, out = sys.argv[1], sys.argv[2]
run(spec, quiet=True)
for stage, tensors in captured.items():
    save_file(tensors, f"{out}/{stage}-rank{world_from_env().rank}.safetensors")
