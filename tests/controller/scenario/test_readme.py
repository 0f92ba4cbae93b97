"""The README's scenario example is a valid scenario."""

from __future__ import annotations

import re

from controller.scenario.loader import check_text
from tests.controller.scenario.conftest import REPO


def test_readme_scenario_example_validates() -> None:
    """The YAML example of the README's Scenarios section loads, with its two variants."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Scenarios: the paper's study") :]
    example = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    loaded, issues = check_text(example)
    assert issues == [] and loaded is not None
    assert [v.name for v in loaded.variants] == ["mult_gdc", "mult_threshold"]
    assert loaded.variants[1].policy_params == {"interval_s": 21600.0, "threshold": 0.05}
