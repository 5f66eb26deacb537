"""Helpers of the search-strategy tests: a tiny space, a slice of the embedded MNIST data, runs."""

from __future__ import annotations

import pytest
import torch

import bionas
from bionas.checkpoint import Checkpointer
from bionas.search import SearchData, resolve_space
from bionas.space import SearchSpace, Supernet
from bionas.spec import SpaceSpec

# 5 candidates (none, max_pool, skip_connect/usf, sep_conv_3x3/usf, sep_conv_3x3/fa), 2 nodes, 3 cells
TINY_SPACE = {"channels": 4, "cells": 3, "nodes": 2, "rules": ["usf", "fa"],
              "ops": ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"]}  # fmt: skip
IMAGES = 48  # per part: 3 steps of 16


@pytest.fixture(scope="session")
def mnist():
    """The embedded mnist5k data set (made once; its tensors are cached by the instance)."""
    return bionas.get_dataset("mnist5k")


def tiny_data(dataset, images: int = IMAGES, seed: int = 0) -> SearchData:
    data = SearchData.split(dataset, 0.5, seed=seed)
    data.weights_indices = data.weights_indices[:images]
    data.arch_indices = data.arch_indices[:images]
    return data


def make_supernet(strategy: bionas.SearchStrategy, dataset, seed: int = 0, **space) -> Supernet:
    """The supernet a pipeline would build: the space resolved for the strategy, a seeded init."""
    spec = resolve_space(SpaceSpec.model_validate({**TINY_SPACE, **space}), type(strategy))
    torch.manual_seed(seed)
    info = dataset.info
    return Supernet(SearchSpace(spec), info.num_classes, info.channels, info.mean, info.std)


class Killed(Exception):
    """Stands for the process being killed."""


def run_search(name: str, options: dict, dataset, checkpoint: Checkpointer | None = None, kill_at: int | None = None,
               space: dict | None = None, images: int = IMAGES):
    """A fresh strategy and supernet searched (quietly, on the CPU); raises Killed when `log` gets epoch `kill_at`."""
    strategy = bionas.get_search(name, **options)
    supernet = make_supernet(strategy, dataset, **(space or {}))
    records = []

    def log(record):
        if record["epoch"] == kill_at:
            raise Killed
        records.append(record)

    result = strategy.search(supernet, tiny_data(dataset, images), bionas.Runtime(quiet=True, log=log), checkpoint)
    assert result.history[-len(records):] == records if records else True
    return result, supernet


def without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]
