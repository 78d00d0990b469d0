"""The examples in docstrings and in README's Python API section are true."""

import doctest
import importlib
import re

import pytest

from tests.helpers import ROOT


@pytest.mark.parametrize("module", ["ric.preference", "ric.score_tags"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_readme_api_examples_give_what_their_comments_say():
    import ric

    block = re.search(r"## Python API\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    checked = 0
    for line in block.splitlines():
        call, _, expected = line.partition("#")
        if not expected.strip() or not call.strip() or "import" in call or "gen." in call:
            continue
        if call.strip().startswith(("preference_to_targets", "pareto_front", "hypervolume")):
            got = eval(call, vars(ric))  # noqa: S307 - our own README
            assert got == eval(expected), f"README: {call.strip()} gives {got!r}, not {expected.strip()}"
            checked += 1
    tagged = re.search(r"(add_score_tags\(.*\))\n# (.*)\n", block)
    assert eval(tagged.group(1), vars(ric)) == eval(tagged.group(2)), "README's add_score_tags example"
    assert checked == 3
