"""The README's "Networks on the chip" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_example_maps_and_evaluates_paper_cnn():
    """The example trains (or loads) paper_cnn, maps it, programs a chip and evaluates it."""
    text = README.read_text()
    section = text[text.index("## Networks on the chip") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert 0.5 < namespace["accuracy"] <= 1.0
    assert namespace["mapped"].quantiser == "multiplicative"
