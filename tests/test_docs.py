"""The docs cannot go stale: every hook is documented, the spec reference is regenerated."""

import inspect
import runpy
from pathlib import Path

from bionas import hookspecs

DOCS = Path(__file__).parents[1] / "docs"


def test_every_hookspec_is_documented_in_the_authoring_guide():
    guide = (DOCS / "plugins.md").read_text()
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("bionas_")]
    assert len(hooks) == 7
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
