"""YAML as scenario files are read and written: PyYAML's safe loader and dumper, with
exponent floats read as numbers.

PyYAML implements YAML 1.1, whose float pattern needs a dot and a signed exponent: ``2.0e+5``
is a float but ``2.0e5`` and ``1e6`` are strings. Everyone writes ``2.0e5``, and YAML 1.2 (the
current version) reads it as a number, so :class:`ScenarioLoader` adds YAML 1.2's exponent
forms to the resolver (``1e6``, ``2.0e5``, ``-3E-2``, ``.5e3``). Nothing else of YAML 1.1 is
changed (``yes``/``no`` are still booleans). :class:`ScenarioDumper` quotes strings that would
read back as such numbers, so that what is written reads back the same.

Both are safe: no object tags, nothing in a file is evaluated.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

#: YAML 1.2 core-schema floats with an exponent that YAML 1.1 reads as strings.
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_FIRST = list("-+.0123456789")


class ScenarioLoader(yaml.SafeLoader):
    """The safe loader, reading ``2.0e5`` and ``1e6`` as floats."""


class ScenarioDumper(yaml.SafeDumper):
    """The safe dumper, quoting strings such as ``'1e6'`` that the loader would read as
    numbers."""


for _cls in (ScenarioLoader, ScenarioDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, _FIRST)


def load_yaml(text: str) -> Any:
    """The data of one YAML document."""
    return yaml.load(text, Loader=ScenarioLoader)  # noqa: S506 - a SafeLoader subclass


def compose_yaml(text: str) -> yaml.Node | None:
    """The node tree of one YAML document (with the start mark of every node)."""
    return yaml.compose(text, Loader=ScenarioLoader)


def dump_yaml(data: Any) -> str:
    """``data`` as YAML in file order, that :func:`load_yaml` reads back the same."""
    return yaml.dump(data, Dumper=ScenarioDumper, sort_keys=False, allow_unicode=True)
