"""Example bionas plugins, one of each kind. Each hook registers classes; bionas owns the registries."""

import bionas

from bionas_example.blobs import Blobs
from bionas_example.one_level import OneLevel
from bionas_example.random_sign import RandomSign
from bionas_example.relu_conv import ReLUConv3x3
from bionas_example.sign_mean import SignMean
from bionas_example.tiny_cnn import TinyCNN


@bionas.hookimpl
def bionas_register_rules(register):
    register(SignMean)


@bionas.hookimpl
def bionas_register_ops(register):
    register(ReLUConv3x3)


@bionas.hookimpl
def bionas_register_search_strategies(register):
    register(OneLevel)


@bionas.hookimpl
def bionas_register_datasets(register):
    register(Blobs)


@bionas.hookimpl
def bionas_register_attacks(register):
    register(RandomSign)


@bionas.hookimpl
def bionas_register_models(register):
    register(TinyCNN)


@bionas.hookimpl
def bionas_register_commands(app):
    @app.command("example-info")
    def example_info() -> None:
        """Say what the example plugin package provides."""
        print(f"bionas-plugin-example: rule '{SignMean.name}', op '{ReLUConv3x3.name}', search "
              f"'{OneLevel.name}', dataset '{Blobs.name}', attack '{RandomSign.name}', model '{TinyCNN.name}'")
