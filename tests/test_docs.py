"""The docs cannot go stale: every hook is documented, the spec reference is regenerated."""

import inspect
import runpy
from pathlib import Path

from bionas import hookspecs

DOCS = Path(__file__).parents[1] / "docs"


def test_every_hookspec_is_documented_in_the_authoring_guide():
    guide = (DOCS / "plugins.md").read_text()
    hooks = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("bionas_")]
    assert len(hooks) == 6
    for hook in hooks:
        assert f"`{hook}(" in guide, f"{hook} is not documented in docs/plugins.md"
        assert inspect.getdoc(getattr(hookspecs, hook)), f"{hook} has no docstring"


def test_spec_reference_is_up_to_date():
    render = runpy.run_path(str(DOCS / "generate_spec_reference.py"))["render"]
    assert (DOCS / "spec.md").read_text() == render(), "run: python docs/generate_spec_reference.py"
