"""The docs cannot go stale: every hook is documented, the spec reference is regenerated, and the
names, paths, imports, plugins and commands the docs give exist."""

import importlib
import inspect
import re
import runpy
from pathlib import Path

import yaml

from bionas import hookspecs
from bionas.registry import get_registry

DOCS = Path(__file__).parents[1] / "docs"


def test_every_hookspec_is_documented_in_the_authoring_guide():
    guide = (DOCS / "plugins.md").read_text()
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("bionas_")]
    assert len(hooks) == 8
    for hook in hooks:
        assert f"`{hook}(" in guide, f"{hook} is not documented in docs/plugins.md"
        assert inspect.getdoc(getattr(hookspecs, hook)), f"{hook} has no docstring"


def test_spec_reference_is_up_to_date():
    render = runpy.run_path(str(DOCS / "generate_spec_reference.py"))["render"]
    assert (DOCS / "spec.md").read_text() == render(), "run: python docs/generate_spec_reference.py"


def test_the_readme_python_example_runs():
    """Everything of the README's example but the full pipeline run (the quickstart, minutes long)."""
    readme = (DOCS.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.split("# The whole pipeline", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    adversarial, images = namespace["adversarial"], namespace["images"]
    assert adversarial.shape == images.shape and (adversarial - images).abs().max() <= 8 / 255 + 1e-6


# -- mechanical checks of what the docs name ---------------------------------------------------------

ROOT = DOCS.parent
PAGES = {path.relative_to(ROOT).as_posix(): path.read_text()
         for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]}


def fenced(language: str) -> list[tuple[str, str]]:
    """(page, body) of every fenced block of `language` (an empty string: blocks with no language)."""
    found = []
    for page, text in PAGES.items():
        for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
            if match.group(1) == language:
                found.append((page, match.group(2)))
    return found


def resolves(dotted: str) -> bool:
    """Whether a dotted name is a module, or an attribute reachable from the longest importable prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


NOT_PYTHON_NAMES = {"bionas.run_dir"}  # the MLflow tag docs/tracking.md names


def test_every_bionas_name_the_docs_give_exists(monkeypatch):
    # `bionas.x.y`, the first-party plugin modules' `bionas_search.x` and the example package's, as the docs
    # write them
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "bionas-plugin-example"))
    pattern = re.compile(r"(?<![\w/.-])(bionas(?:_\w+)?(?:\.[A-Za-z_]\w*)+)")
    missing = {(page, name) for page, text in PAGES.items() for name in pattern.findall(text)
               if not name.endswith((".py", ".md", ".yaml", ".json")) and name not in NOT_PYTHON_NAMES
               and not resolves(name)}
    assert not missing, sorted(missing)


def test_every_repository_path_the_docs_give_exists():
    pattern = re.compile(r"(?<![\w/.-])((?:bionas|plugins|benchmarks|tests|examples|docs)/[\w./*-]*[\w*])")
    missing = {(page, path) for page, text in PAGES.items() for path in pattern.findall(text)
               if not any(ROOT.glob(path))}  # a glob (`plugins/bionas_*`) names at least one
    assert not missing, sorted(missing)


def test_the_imports_of_every_python_block_run(monkeypatch):
    # the blocks are excerpts (they use names defined elsewhere), but what they import must exist
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "bionas-plugin-example"))  # docs/plugins.md's
    for page, code in fenced("python"):
        imports = [line.strip() for line in code.splitlines() if re.match(r"\s*(import|from)\s+\w", line)]
        exec(compile("\n".join(imports), page, "exec"), {})


KIND_OF_KEY = {"dataset": "dataset", "search": "search", "attacks": "attack", "rules": "rule", "stem": "rule",
               "preprocess": "rule", "classifier": "rule", "auxiliary": "rule", "ops": "op"}


def plugin_names(node, kind=None):
    """(kind, name) of every plugin a YAML spec fragment names."""
    if isinstance(node, dict):
        if kind and isinstance(node.get("name"), str):
            yield kind, node["name"]
        for key, value in node.items():
            yield from plugin_names(value, KIND_OF_KEY.get(key))
    elif isinstance(node, list):
        for item in node:
            yield from plugin_names(item, kind)
    elif isinstance(node, str) and kind in ("rule", "op"):
        yield kind, node


def test_every_plugin_a_yaml_block_names_is_registered(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "bionas-plugin-example"))
    example = importlib.import_module("bionas_example")  # docs/plugins.md uses the example package's plugins
    example_names = {cls.name for cls in vars(example).values() if isinstance(cls, type) and hasattr(cls, "name")}
    registry = get_registry()
    blocks = fenced("yaml")
    assert blocks and len(example_names) == 6  # one plugin of each kind but logger
    named = {(kind, name) for _, code in blocks for kind, name in plugin_names(yaml.safe_load(code))}
    assert {kind for kind, _ in named} >= {"dataset", "search", "attack", "rule"}
    unknown = {(kind, name) for kind, name in named if name not in registry.names(kind) and name not in example_names}
    assert not unknown, sorted(unknown)


def test_every_built_in_plugin_is_described_on_its_page():
    registry = get_registry()
    pages = {"rule": "docs/rules.md", "op": "docs/space.md", "search": "docs/search.md",
             "attack": "docs/attacks.md", "dataset": "docs/datasets.md"}
    for kind, page in pages.items():
        first_party = [info.name for info in registry.list(kind) if info.distribution == "bionas"]
        assert first_party, kind
        for name in first_party:
            assert f"`{name}`" in PAGES[page] or f"### {name}" in PAGES[page], f"{kind} {name} is not in {page}"


def command_lines() -> list[tuple[str, str]]:
    """(page, line) of every `bionas ...` or `python benchmarks/...` command the docs show (blocks and spans)."""
    lines = [(page, span.replace("\\|", "|")) for page, text in PAGES.items()  # `\|` in a table: `|`
             for span in re.findall(r"`((?:bionas|python benchmarks/\w+\.py) [^`\n]*)`", text)]
    for page, code in fenced("") + fenced("bash") + fenced("sh") + fenced("console"):
        for line in code.splitlines():
            line = line.split("#", 1)[0].strip().removeprefix("$ ")
            for command in line.split(" | "):  # `bionas search SPEC | bionas train SPEC`: two commands
                if command.startswith(("bionas ", "python benchmarks/")):
                    lines.append((page, command))
    return lines


def test_every_cli_command_the_docs_show_exists_with_its_options():
    # `bionas analyze gradvar RUN_DIR [--batches 16]`: the command, its options, and a number shown after an
    # option is that option's default
    import typer

    from bionas.cli import build_app

    root = typer.main.get_command(build_app())
    context = typer.Context(root)
    commands = [(page, line) for page, line in command_lines() if line.startswith("bionas ")]
    assert len(commands) >= 20
    for page, line in commands:
        words = line.split()[1:]
        path = []
        for word in words:  # the command path: the words before the first argument or option
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            path.append(word)
        if len(words) > len(path) and "|" in words[len(path)] and not words[len(path)].startswith("-"):
            paths = [[*path, alternative] for alternative in words[len(path)].split("|")]  # a|b|c: each
        else:
            paths = [path]
        for names in paths:
            command = root
            for name in names:  # get_command: the root finds the commands plugins add as a user's call does
                found = command.get_command(context, name) if hasattr(command, "get_command") else None
                assert found is not None, f"{page}: `{line}`: no command {name}"
                command = found
            options = {opt: param for param in command.params for opt in param.opts}
            options["--help"] = None  # every command has it (click adds it outside `params`)
            if command is root:
                options["--version"] = None
            for option, value in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)(?: (\d+)(?![\w/.,]))?", line):
                assert option in options, f"{page}: `bionas {' '.join(names)}` has no {option}"
                if value and options[option] is not None and not options[option].multiple:
                    assert str(options[option].default) == value, f"{page}: {option} defaults to something else"


def test_every_benchmark_command_the_docs_show_exists_with_its_options():
    commands = [(page, line) for page, line in command_lines() if line.startswith("python benchmarks/")]
    assert commands
    for page, line in commands:
        script = ROOT / line.split()[1]
        assert script.exists(), f"{page}: {script.name} does not exist"
        source = script.read_text()
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line):
            assert f'"{option}"' in source, f"{page}: {script.name} has no {option}"


def test_the_plugin_testing_example_of_the_authoring_guide_runs(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "bionas-plugin-example"))
    code = next(code for page, code in fenced("python") if page == "docs/plugins.md" and "def test_my_rule" in code)
    namespace: dict = {}
    exec(compile(code, "docs/plugins.md", "exec"), namespace)
    namespace["test_my_rule"]()
    assert "sign_mean" not in get_registry().names("rule")  # the example unregisters itself again


def test_the_keyword_arguments_python_blocks_pass_exist(monkeypatch):
    # `SearchSpace(spec=None, ...)`, `make_loader(ds, "train", 64, train=True, ...)`: each keyword a call of an
    # imported bionas callable passes is one of its parameters (calls on instances are not checked)
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "bionas-plugin-example"))
    checked = 0
    for page, code in fenced("python"):
        namespace: dict = {}
        imports = [line.strip() for line in code.splitlines() if re.match(r"\s*(import|from)\s+\w", line)]
        exec(compile("\n".join(imports), page, "exec"), namespace)
        for dotted, arguments in re.findall(r"(?<![\w.])([A-Za-z_][\w.]*)\(([^()]*)\)", code):
            head, *rest = dotted.split(".")
            obj = namespace.get(head)
            for name in rest:
                obj = getattr(obj, name, None)
            if obj is None or not callable(obj) or not getattr(obj, "__module__", "").startswith("bionas"):
                continue
            parameters = inspect.signature(obj).parameters
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                continue
            for keyword in re.findall(r"(?:^|,)\s*(\w+)=", arguments):
                assert keyword in parameters, f"{page}: {dotted}() has no parameter {keyword}"
                checked += 1
    assert checked >= 10
