"""The README's library snippet runs as written."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


@pytest.mark.slow
def test_readme_library_snippet_runs(capsys):
    text = open(README).read()
    snippet = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    exec(compile(snippet, "README.md", "exec"), {})
    loss, err, n_train, n_infer = capsys.readouterr().out.split()
    assert float(err) < 1e-4
    assert (int(n_train), int(n_infer)) == (3865188, 2818530)
