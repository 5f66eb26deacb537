"""Example bionas plugins. Each hook registers classes; bionas owns the registries."""

import bionas

from bionas_example.blobs import Blobs
from bionas_example.sign_mean import SignMean


@bionas.hookimpl
def bionas_register_rules(register):
    register(SignMean)


@bionas.hookimpl
def bionas_register_datasets(register):
    register(Blobs)


@bionas.hookimpl
def bionas_register_commands(app):
    @app.command("example-info")
    def example_info() -> None:
        """Say what the example plugin package provides."""
        print(f"bionas-plugin-example: rule '{SignMean.name}', dataset '{Blobs.name}'")
