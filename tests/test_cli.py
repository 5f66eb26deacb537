"""The `bionas` command through Typer's CliRunner: output, exit codes, no tracebacks."""

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

import bionas
import bionas.cli
from bionas import registry
from bionas.cli import build_app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(build_app(), list(args))


def write_spec(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"bionas {bionas.__version__}"


HEAVY = ("torch", "numpy", "bionas.registry", "bionas_rules", "bionas_attacks")
HELP_EVERYWHERE = """
import sys
import typer
from typer.testing import CliRunner
from bionas.cli import build_app

app = build_app()

def paths(command, prefix):
    yield prefix
    if hasattr(command, "list_commands"):  # a group
        ctx = typer.Context(command)
        for name in command.list_commands(ctx):
            yield from paths(command.get_command(ctx, name), [*prefix, name])

runner = CliRunner()
helps = [p + ["--help"] for p in paths(typer.main.get_command(app), [])]
assert len(helps) >= 15, helps  # the root, each command, each group and its commands
for path in [["--version"], [], *helps]:
    result = runner.invoke(app, path)
    assert result.exit_code in (0, 2) and ("Usage" in result.output or "bionas " in result.output), (path, result.output)
print(" ".join(sorted(m for m in {heavy} if m in sys.modules)) or "none")
"""


def test_version_and_every_help_import_neither_torch_nor_the_plugins():
    """`bionas --version` and every --help answer without torch (docs/index.md: the CLI starts at once)."""
    result = subprocess.run([sys.executable, "-c", HELP_EVERYWHERE.format(heavy=HEAVY)], capture_output=True,
                            text=True, check=True)
    assert result.stdout.split()[-1] == "none", result.stdout


def test_the_cli_knows_the_plugin_kinds_without_the_registry():
    assert list(bionas.cli.KIND_NAMES) == list(registry.KINDS)


def test_plugins_list_json_is_valid_and_complete(toy_plugins):
    result = invoke("plugins", "list", "--json")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    listed = {(p["kind"], p["name"]) for p in payload["plugins"]}
    assert listed == {(info.kind, info.name) for info in bionas.list_plugins()}
    assert ("search", "toy_search") in listed
    toy = next(p for p in payload["plugins"] if p["name"] == "toy_op")
    assert set(toy) >= {"name", "kind", "description", "distribution", "version"}


def test_plugins_list_table_and_kind_filter(toy_plugins):
    result = invoke("plugins", "list", "--kind", "attack")
    assert result.exit_code == 0
    assert "toy_attack" in result.stdout and "toy_rule" not in result.stdout
    bad = invoke("plugins", "list", "--kind", "atack")
    assert bad.exit_code == 2 and "Did you mean: attack" in bad.stderr and "Traceback" not in bad.output


def test_validate_valid_spec(toy_plugins, tmp_path):
    result = invoke("validate", str(write_spec(tmp_path / "s.yaml", toy_plugins.spec())))
    assert result.exit_code == 0 and result.stdout.strip() == "valid"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"dataset": {"name": "toy_dta"}}, "dataset.name: unknown dataset 'toy_dta'. Did you mean: toy_data?"),
        ({"seed": "x"}, "seed: Input should be a valid integer"),
        ({"search": {"name": "toy_search", "options": {"epohcs": 2}}}, "search.options.epohcs: unknown field"),
        ({"dataset": None}, "dataset: Input should be a valid dictionary"),
    ],
)
def test_validate_invalid_spec_exits_2_naming_the_path(toy_plugins, tmp_path, change, expected):
    result = invoke("validate", str(write_spec(tmp_path / "s.yaml", toy_plugins.spec(**change))))
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_validate_missing_section_and_missing_file(toy_plugins, tmp_path):
    spec = toy_plugins.spec()
    del spec["dataset"]
    result = invoke("validate", str(write_spec(tmp_path / "s.yaml", spec)))
    assert result.exit_code == 2 and "dataset: Field required" in result.stderr
    missing = invoke("validate", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "file not found" in missing.stderr


def test_schema_prints_json_with_plugin_options(toy_plugins):
    result = invoke("schema")
    assert result.exit_code == 0
    assert "SearchToySearch" in json.loads(result.stdout)["$defs"]


def test_run_rejects_a_bad_device(toy_plugins, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", toy_plugins.spec())
    result = invoke("run", str(spec), "--device", "tpu")
    assert result.exit_code == 2 and "device: String should match pattern" in result.stderr


def test_plugin_commands_are_added_but_cannot_replace_builtins(capsys):
    class Plugin:
        @bionas.hookimpl
        def bionas_register_commands(self, app):
            @app.command("hello")
            def hello():
                print("hello from a plugin")

            @app.command("validate")
            def hijack():
                print("hijacked")

    registry.get_registry().register_plugin(Plugin(), "cmds")
    app = build_app()
    hello = runner.invoke(app, ["hello"])  # no built-in: the plugins are loaded, their commands added
    assert hello.stdout.strip() == "hello from a plugin"
    assert "plugin 'cmds' tried to replace the built-in command 'validate'; ignored" in hello.stderr
    listed = runner.invoke(app, ["plugins", "commands"])
    assert listed.exit_code == 0 and "hello" in listed.stdout and "validate" not in listed.stdout
    result = runner.invoke(app, ["validate", "nope.yaml"])
    # Only the built-in validate takes a file and reports it missing (the hijacker takes no arguments).
    assert result.exit_code == 2 and "file not found" in result.stderr and "hijacked" not in result.output


def test_plugin_command_errors_are_reported_not_raised():
    class Plugin:
        @bionas.hookimpl
        def bionas_register_commands(self, app):
            @app.command("fails")
            def fails():
                raise bionas.DataError("no data in /nowhere")

    registry.get_registry().register_plugin(Plugin(), "failing")
    result = runner.invoke(build_app(), ["fails"])
    assert result.exit_code == 1 and "error: no data in /nowhere" in result.stderr


def test_every_command_works_with_a_broken_plugin_installed(make_distribution, toy_rule_source, tmp_path):
    make_distribution("broken-dist", {"broken_mod": "raise ImportError('missing libfoo')\n"}, {"broken": "broken_mod"})
    make_distribution("good-dist", {"good_mod": toy_rule_source.format(name="good_rule")}, {"good": "good_mod"})
    registry.reset()
    for args in (["--version"], ["plugins", "list"], ["plugins", "list", "--json"], ["schema"]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
    listing = invoke("plugins", "list")
    assert "good_rule" in listing.stdout
    assert "plugin 'broken' (broken-dist 1.0) was skipped" in listing.stderr and "missing libfoo" in listing.stderr
    payload = json.loads(invoke("plugins", "list", "--json").stdout)
    assert payload["problems"][0]["plugin"] == "broken"


def test_strict_mode_exits_nonzero_with_a_broken_plugin(make_distribution):
    make_distribution("broken-dist", {"broken_mod": "raise ImportError('missing libfoo')\n"}, {"broken": "broken_mod"})
    env_result = subprocess.run(
        [sys.executable, "-m", "bionas", "plugins", "list"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, registry.STRICT_ENV: "1"},
    )
    assert env_result.returncode == 2
    assert "broken-dist" in env_result.stderr and "BIONAS_STRICT_PLUGINS" in env_result.stderr
    assert "Traceback" not in env_result.stderr
