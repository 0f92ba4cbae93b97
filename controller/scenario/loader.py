"""Read a scenario file, merge its variants, check it, and say where every error is.

``load_scenario(path)`` returns a :class:`LoadedScenario` (the validated base and one
:class:`ResolvedVariant` per variant) or raises :class:`ScenarioInvalid` holding EVERY problem
found, each with its field path (``controller.policy.params.interval_s``) and the line of the
YAML file it comes from.

How lines are found: the file is composed with PyYAML's safe loader into nodes that keep their
start marks, and every key and list item is recorded by its path. Pydantic's error ``loc`` is
walked along the data (union-member tags in the ``loc`` are skipped) to the deepest path that
exists, and that path's line is reported. Errors inside a variant are reported at the
variant's own lines when the offending value comes from the override.

Checks beyond the schema ("semantic" checks, run on every resolved variant): evaluation times
within the duration; the policy resolves (a user policy's module is imported, which is the only
code a scenario may cause to run; a relative path is the scenario file's folder's) and its
parameters pass its parameter model (``controller.firmware.policies.params``), each problem
at ``controller.policy.params.<name>``, a misspelt name answered with the closest one. Nothing
in a scenario is ever evaluated: YAML is read with the safe loader (no object tags,
:mod:`~controller.scenario.yamlio`: exponent floats such as ``2.0e5`` are numbers), durations
are matched by a regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controller.firmware.policies import (
    PolicyLoadError,
    PolicyParamsInvalid,
    check_params,
    load_policy,
    params_model,
    resolve_policy_class,
)
from controller.scenario.durations import log_spaced_s, parse_duration_s
from controller.scenario.schema import Scenario, ScenarioCore, merge
from controller.scenario.yamlio import compose_yaml, load_yaml

Path_ = tuple[str | int, ...]

#: Keys a variant may not override.
_NOT_IN_VARIANTS = ("name", "variants", "sweep")


@dataclass(frozen=True)
class ScenarioIssue:
    """One problem in a scenario: where (field path, line) and what."""

    path: Path_
    message: str
    line: int | None = None

    @property
    def dotted(self) -> str:
        return ".".join(str(p) for p in self.path) or "<scenario>"

    def format(self, filename: str = "<scenario>") -> str:
        where = f"{filename}:{self.line}" if self.line is not None else filename
        return f"{where}: {self.dotted}: {self.message}"


class ScenarioInvalid(ValueError):
    """A scenario with problems; ``issues`` holds every one of them."""

    def __init__(self, issues: list[ScenarioIssue], filename: str = "<scenario>") -> None:
        self.issues = issues
        self.filename = filename
        lines = "\n".join("  " + i.format(filename) for i in issues)
        super().__init__(f"{filename}: {len(issues)} problem(s)\n{lines}")


@dataclass(frozen=True)
class ResolvedVariant:
    """One variant of a study: the base with its overrides, validated and checked.

    ``policy_params`` are the policy's constructor arguments with durations turned into
    seconds; ``eval_times_s`` is sorted and free of duplicates; ``policy_dir`` is where a
    user policy's relative path is looked up (the scenario file's folder).
    """

    name: str
    core: ScenarioCore
    override: dict[str, Any]
    policy_params: dict[str, Any]
    eval_times_s: tuple[float, ...]
    policy_dir: str | None = None


@dataclass
class LoadedScenario:
    """A validated scenario file."""

    scenario: Scenario
    variants: list[ResolvedVariant]
    raw: dict[str, Any]
    source: str = "<scenario>"
    lines: dict[Path_, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.scenario.name

    def variant(self, name: str) -> ResolvedVariant:
        for v in self.variants:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants)
        raise KeyError(f"no variant {name!r} in scenario {self.name!r}; variants: {known}")


# --- YAML with line marks ------------------------------------------------------------------------
def _walk_nodes(
    node: yaml.Node, path: Path_, lines: dict[Path_, int], issues: list[ScenarioIssue]
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key: Any = key_node.value
            if key_node.tag != "tag:yaml.org,2002:str":  # 1:, true:, ... as safe_load reads them
                key = load_yaml(yaml.serialize(key_node))
            line = key_node.start_mark.line + 1
            if key == "<<":  # merge key: its keys land on this mapping; lines stay at the alias
                continue
            if key in seen:
                issues.append(
                    ScenarioIssue((*path, key), f"duplicate key (first at line {seen[key]})", line)
                )
            seen[key] = line
            lines[(*path, key)] = line
            _walk_nodes(value_node, (*path, key), lines, issues)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _walk_nodes(item, (*path, i), lines, issues)


def parse_yaml(text: str) -> tuple[Any, dict[Path_, int], list[ScenarioIssue]]:
    """The data of a YAML document, the line of every key and list item by path, and the
    problems found while reading (syntax errors, duplicate keys)."""
    issues: list[ScenarioIssue] = []
    lines: dict[Path_, int] = {}
    try:
        node = compose_yaml(text)
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        line, message = _yaml_error(exc)
        issues.append(ScenarioIssue((), f"not valid YAML: {message}", line))
        return None, lines, issues
    if node is not None:
        lines[()] = node.start_mark.line + 1
        _walk_nodes(node, (), lines, issues)
    return data, lines, issues


def _yaml_error(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """Where a YAML syntax error is and what it is. A flow collection (``{...}``, ``[...]``)
    left open is reported where it opens: the parser only notices at the next line (or the
    end of the file)."""
    problem = getattr(exc, "problem", None) or str(exc)
    mark = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context", None) or ""
    opened = getattr(exc, "context_mark", None)
    if opened is not None and context.startswith("while parsing a flow"):
        kind = "{" if "mapping" in context else "["
        close = "}" if kind == "{" else "]"
        at = f" at line {mark.line + 1}" if mark is not None else ""
        return opened.line + 1, (
            f"the '{kind}' at column {opened.column + 1} is never closed ({problem}{at}): "
            f"a missing '{close}'?"
        )
    mark = mark or opened
    return (mark.line + 1 if mark is not None else None), problem


def line_of(path: Path_, lines: dict[Path_, int]) -> int | None:
    """The line of ``path`` or of its deepest ancestor that has one."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get((), 1 if lines else None)


# --- pydantic errors to paths --------------------------------------------------------------------
def _has(container: Any, part: str | int) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container)


def _data_path(loc: Iterable[str | int], data: Any, err_type: str) -> Path_:
    """Walk ``loc`` along ``data``: keep the elements that exist, skip union-member tags."""
    loc = tuple(loc)
    out: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if _has(cur, part):
            out.append(part)
            cur = cur[part]
        elif last and err_type in ("missing", "extra_forbidden"):
            out.append(part)
        elif (
            isinstance(cur, dict)
            and err_type == "missing"
            and not re.fullmatch(r"function-.*|.*\[.*\]", str(part))
        ):
            out.append(part)  # a missing field inside a union member: name it, not the tag
    return tuple(out)


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (not part of the schema; check its spelling and section)"
    elif err.get("type") == "missing":
        msg = "required field is missing"
    return msg


def issues_from_validation(exc: ValidationError, data: Any) -> list[tuple[Path_, str, str]]:
    """(path, message, error type) of every error of ``exc``; the errors of one path (union
    members) are joined into one message."""
    by_path: dict[Path_, tuple[list[str], str]] = {}
    for err in exc.errors(include_url=False):
        path = _data_path(err["loc"], data, err["type"])
        msgs, _ = by_path.setdefault(path, ([], err["type"]))
        m = _message(err)
        if m not in msgs:
            msgs.append(m)
    return [(p, "; or ".join(ms), t) for p, (ms, t) in by_path.items()]


def _in_override(path: Path_, override: Any) -> bool:
    cur = override
    for part in path:
        if not _has(cur, part):
            return False
        cur = cur[part]
    return True


def _override_prefix(path: Path_, override: Any) -> Path_:
    """The longest prefix of ``path`` that the override sets."""
    for n in range(len(path), 0, -1):
        if _in_override(path[:n], override):
            return path[:n]
    return ()


# --- semantic checks -----------------------------------------------------------------------------
def eval_times_s(core: ScenarioCore) -> list[float]:
    """The evaluation times of a variant, in seconds, sorted, without duplicates."""
    ev = core.evaluation
    if ev.times is not None:
        return sorted(set(float(t) for t in ev.times))
    assert ev.log_spaced is not None
    stop = ev.log_spaced.stop if ev.log_spaced.stop is not None else core.duration
    return sorted(set(log_spaced_s(ev.log_spaced.start, stop, ev.log_spaced.points)))


def _policy_params(params: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[Path_, str]]]:
    out: dict[str, Any] = {}
    problems: list[tuple[Path_, str]] = []
    for key, value in params.items():
        if str(key).endswith("_s") and isinstance(value, str):
            try:
                out[key] = parse_duration_s(value)
            except ValueError as exc:
                problems.append((("controller", "policy", "params", key), str(exc)))
        else:
            out[key] = value
    return out, problems


def _seconds(value: Any) -> float | None:
    try:
        return parse_duration_s(value)
    except ValueError:
        return None  # the schema reports it


def semantic_issues(
    data: dict[str, Any], base_dir: str | None = None
) -> tuple[dict[str, Any], list[tuple[Path_, str]]]:
    """Problems the schema alone cannot see in scenario ``data`` (raw, so that they are found
    even when other parts are invalid), and the policy's parameters as it gets them
    (durations in seconds). A user policy's relative path is looked up in ``base_dir``."""

    problems: list[tuple[Path_, str]] = []
    duration = _seconds(data.get("duration")) if "duration" in data else None
    ev = data.get("evaluation")
    if duration is not None and isinstance(ev, dict):
        times = ev.get("times")
        if isinstance(times, list):
            for i, t in enumerate(times):
                ts = _seconds(t)
                if ts is not None and ts > duration:
                    msg = f"{t} ({ts:g} s) is beyond the duration ({duration:g} s)"
                    problems.append((("evaluation", "times", i), msg))
        spaced = ev.get("log_spaced")
        if isinstance(spaced, dict):
            stop = _seconds(spaced["stop"]) if spaced.get("stop") is not None else duration
            start = _seconds(spaced.get("start")) if "start" in spaced else None
            if stop is not None and stop > duration:
                msg = f"{stop:g} s is beyond the duration ({duration:g} s)"
                problems.append((("evaluation", "log_spaced", "stop"), msg))
            if start is not None and stop is not None and not 0 < start <= stop:
                problems.append(
                    (("evaluation", "log_spaced", "start"), "start must be > 0 and not after stop")
                )
    controller = data.get("controller")
    policy = controller.get("policy") if isinstance(controller, dict) else None
    if not isinstance(policy, dict):
        return {}, problems
    name = policy.get("name", "none")
    raw_params = policy.get("params", {})
    if not isinstance(name, str) or not isinstance(raw_params, dict):
        return {}, problems  # the schema reports it
    params, policy_problems = policy_issues(name, raw_params, base_dir)
    return params, problems + policy_problems


def policy_issues(
    name: str, raw_params: dict[str, Any], base_dir: str | None = None
) -> tuple[dict[str, Any], list[tuple[Path_, str]]]:
    """The policy's parameters as it gets them, and every problem of the policy's name and
    parameters: each at ``controller.policy.params.<parameter>`` when it is one's."""
    where: Path_ = ("controller", "policy", "params")
    try:
        cls = resolve_policy_class(name, base_dir)
    except PolicyLoadError as exc:
        return dict(raw_params), [(("controller", "policy", "name"), str(exc))]
    params, problems = dict(raw_params), []
    if params_model(cls) is None:  # a user policy without a model: `*_s` take durations
        params, problems = _policy_params(raw_params)
        if problems:
            return params, problems
    try:
        params = check_params(name, cls, params)
        load_policy(name, params, base_dir)  # what the constructor itself refuses
    except PolicyParamsInvalid as exc:
        problems += [((*where, key) if key else where, msg) for key, msg in exc.problems]
    except PolicyLoadError as exc:
        problems.append((where, str(exc)))
    return params, problems


# --- the whole file ------------------------------------------------------------------------------
def _from_override(path: Path_, override: dict[str, Any], err_type: str = "") -> bool:
    """Whether the value at ``path`` of a merged variant is the override's doing."""
    if _in_override(path, override):
        return True
    prefix = _override_prefix(path, override)
    if not prefix:
        return False
    value: Any = override
    for part in prefix:
        value = value[part]
    # a scalar or list that replaced a section, or a section the override replaced whole
    if not isinstance(value, dict):
        return True
    return len(prefix) == len(path) - 1 and err_type in ("missing", "extra_forbidden")


def check_data(
    data: Any, lines: dict[Path_, int], base_dir: str | None = None
) -> tuple[Scenario | None, list[ResolvedVariant], list[ScenarioIssue]]:
    """Validate scenario ``data``: every issue found, mapped to ``lines`` (``base_dir``: where
    a user policy's relative path is looked up, the scenario file's folder).

    The base must be a valid scenario on its own, and so must every variant (the base with its
    overrides). An error in a variant is reported at the override's path and line when the
    override set the offending value; an error the base already has is reported once.
    """
    issues: list[ScenarioIssue] = []

    def add(path: Path_, message: str) -> None:
        issue = ScenarioIssue(tuple(path), message, line_of(path, lines))
        if all((i.path, i.message) != (issue.path, issue.message) for i in issues):
            issues.append(issue)

    if not isinstance(data, dict):
        add((), "a scenario must be a YAML mapping (key: value) at the top level")
        return None, [], issues

    base_paths: set[Path_] = set()
    scenario: Scenario | None = None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        for path, msg, _ in issues_from_validation(exc, data):
            add(path, msg)
            base_paths.add(path)
    base = {k: v for k, v in data.items() if k not in _NOT_IN_VARIANTS}
    base_params, problems = semantic_issues(base, base_dir)
    for path, msg in problems:
        add(path, msg)
        base_paths.add(path)

    variants: list[ResolvedVariant] = []
    raw_variants = data.get("variants") or {}
    if not isinstance(raw_variants, dict):
        return scenario, [], issues
    if not raw_variants and scenario is not None and not issues:
        core = ScenarioCore.model_validate(base)
        times = tuple(eval_times_s(core))
        variants.append(ResolvedVariant("base", core, {}, base_params, times, base_dir))

    for vname, override in raw_variants.items():
        vpath: Path_ = ("variants", vname)
        if not isinstance(override, dict):
            continue  # the schema reports it
        bad = [k for k in override if k in _NOT_IN_VARIANTS]
        for k in bad:
            add((*vpath, k), f"a variant cannot override {k!r}")
        override = {k: v for k, v in override.items() if k not in bad}
        merged = merge(base, override)
        found: list[tuple[Path_, str, str]] = []
        core: ScenarioCore | None = None
        try:
            core = ScenarioCore.model_validate(merged)
        except ValidationError as exc:
            found += issues_from_validation(exc, merged)
        params, problems = semantic_issues(merged, base_dir)
        found += [(p, m, "") for p, m in problems]
        for path, msg, err_type in found:
            if _from_override(path, override, err_type):
                add((*vpath, *path), msg)
            elif path not in base_paths:  # a base value that no longer fits the override
                add(vpath, f"{'.'.join(map(str, path))}: {msg}")
        if core is not None and not found and not bad:
            times = tuple(eval_times_s(core))
            variants.append(ResolvedVariant(str(vname), core, override, params, times, base_dir))
    return scenario, variants, issues


def sort_issues(issues: list[ScenarioIssue]) -> list[ScenarioIssue]:
    """Issues in file order (those without a line first)."""
    return sorted(issues, key=lambda i: i.line or 0)


def check_text(
    text: str, base_dir: str | None = None
) -> tuple[LoadedScenario | None, list[ScenarioIssue]]:
    """Parse and check scenario YAML ``text`` (``base_dir``: see :func:`check_data`)."""
    data, lines, issues = parse_yaml(text)
    if data is None and issues:
        return None, issues
    scenario, variants, more = check_data(data, lines, base_dir)
    issues = issues + more
    if scenario is None or issues:
        return None, issues
    return LoadedScenario(scenario, variants, data, lines=lines), issues


def load_scenario(
    source: str | Path | dict[str, Any], variant: str | None = None, base_dir: str | None = None
) -> LoadedScenario:
    """A validated scenario from a file path or a mapping; raises :class:`ScenarioInvalid`
    listing every problem. ``variant`` keeps only that variant. A user policy's relative path
    is looked up in the file's folder (``base_dir`` for a mapping), then the working
    directory."""
    if isinstance(source, dict):
        scenario, variants, issues = check_data(source, {}, base_dir)
        name = "<scenario>"
        loaded = None if scenario is None or issues else LoadedScenario(scenario, variants, source)
    else:
        name = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            issue = ScenarioIssue((), f"cannot read the file: {exc}")
            raise ScenarioInvalid([issue], name) from exc
        loaded, issues = check_text(text, str(Path(source).resolve().parent))
    if loaded is None or issues:
        raise ScenarioInvalid(sort_issues(issues), name)
    loaded.source = name
    if variant is not None:
        try:
            loaded.variants = [loaded.variant(variant)]
        except KeyError as exc:
            raise ScenarioInvalid([ScenarioIssue(("variants",), str(exc.args[0]))], name) from exc
    return loaded
