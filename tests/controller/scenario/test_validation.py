"""Bad scenario files fail with the field path and the line of every problem."""

from __future__ import annotations

import textwrap

import pytest

from controller.scenario.loader import ScenarioInvalid, check_text, load_scenario

BASE = textwrap.dedent(
    """\
    name: check
    seed: 3
    seeds: 2
    duration: 1d
    evaluation:
      times: [1s, 1h, 1d]
    workload:
      network: digits_mlp
    mapping:
      quantiser: multiplicative
    controller:
      policy:
        name: threshold
        params: {interval_s: 6h, threshold: 0.05}
    variants:
      quiet:
        controller: {policy: {name: gdc}}
      busy:
        controller: {policy: {params: {interval_s: 1h}}}
    """
)


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (what is wrong, the file, the field path reported, its line, a fragment of the message)
CASES = [
    ("unknown key", edit("  network: digits_mlp", "  network: digits_mlp\n  colour: blue"),
     "workload.colour", 9, "unknown key"),
    ("wrong unit", edit("duration: 1d", "duration: 1 fortnight"), "duration", 4, "unknown time unit"),
    ("ambiguous unit", edit("times: [1s, 1h, 1d]", "times: [1s, 5m, 1d]"), "evaluation.times.1", 6, "ambiguous"),
    ("negative interval", edit("interval_s: 6h,", "interval_s: -6h,"),
     "controller.policy.params.interval_s", 14, "negative"),
    ("zero interval (the parameter model refuses it)", edit("interval_s: 6h,", "interval_s: 0,"),
     "controller.policy.params.interval_s", 14, "greater than or equal to 0.1"),
    ("unknown policy path", edit("name: threshold", "name: no_such_pkg.policies:Mine"),
     "controller.policy.name", 13, "cannot import"),
    ("unknown built-in policy", edit("name: threshold", "name: thresold"),
     "controller.policy.name", 13, "unknown policy"),
    ("policy path to a missing class", edit("name: threshold", "name: tests.controller.scenario.user_policy:Nope"),
     "controller.policy.name", 13, "has no"),
    ("unknown policy parameter", edit("threshold: 0.05}", "threshold: 0.05, gain: 2}"),
     "controller.policy.params.gain", 14, "unknown parameter; the parameters are interval_s, threshold"),
    ("misspelt policy parameter", edit("threshold: 0.05}", "treshold: 0.05}"),
     "controller.policy.params.treshold", 14, "did you mean 'threshold'?"),
    ("misspelt built-in policy", edit("name: threshold", "name: treshold"),
     "controller.policy.name", 13, "did you mean 'threshold'?"),
    ("policy parameter out of its range", edit("threshold: 0.05}", "threshold: 0.05, rows_fraction: 2}"),
     "controller.policy.params.rows_fraction", 14, "less than or equal to 1"),
    ("policy parameter not one of its choices", edit("threshold: 0.05}", "threshold: 0.05, scope: chip}"),
     "controller.policy.params.scope", 14, "'device' or 'tile'"),
    ("user policy parameter it does not take", edit("name: threshold\n    params: {interval_s: 6h, threshold: 0.05}",
     "name: tests.controller.scenario.user_policy:DailyCheck\n    params: {intervall_s: 6h}"),
     "controller.policy.params.intervall_s", 14, "did you mean 'interval_s'?"),
    ("missing closing brace", edit("threshold: 0.05}", "threshold: 0.05"), "<scenario>", 14,
     "'{' at column 13 is never closed"),
    ("bad variant override: unknown quantiser", edit("    controller: {policy: {name: gdc}}",
     "    mapping: {quantiser: fancy}"), "variants.quiet.mapping.quantiser", 17, "does not match"),
    ("bad variant override: wrong type", edit("params: {interval_s: 1h}", "params: {interval_s: 1h, threshold: high}"),
     "variants.busy.controller.policy.params.threshold", 19, "valid number"),
    ("variant overrides the name", edit("  quiet:\n", "  quiet:\n    name: other\n"),
     "variants.quiet.name", 17, "cannot override"),
    ("wrong type", edit("seeds: 2", "seeds: two"), "seeds", 3, "valid integer"),
    ("missing required field", edit("  network: digits_mlp\n", "  test_images: 10\n"),
     "workload.network", 7, "required field is missing"),
    ("missing duration", edit("duration: 1d\n", ""), "duration", 1, "required field is missing"),
    ("evaluation time beyond the duration", edit("times: [1s, 1h, 1d]", "times: [1s, 1h, 2d]"),
     "evaluation.times.2", 6, "beyond the duration"),
    ("unknown network", edit("network: digits_mlp", "network: resnet50"), "workload", 7, "unknown network"),
    ("negative seed", edit("seed: 3", "seed: -3"), "seed", 2, "greater than or equal"),
    ("duplicate key", edit("seeds: 2", "seeds: 2\nseeds: 4"), "seeds", 4, "duplicate key"),
    ("quantiser parameter out of range", edit("quantiser: multiplicative", "quantiser: {kind: multiplicative, n_levels: 0}"),
     "mapping.quantiser.n_levels", 10, "greater than or equal"),
    ("not YAML", edit("seeds: 2", "seeds: [2"), "<scenario>", None, "not valid YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "text", "path", "line", "fragment"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_scenario_reports_path_and_line(
    what: str, text: str, path: str, line: int | None, fragment: str
) -> None:
    """Each kind of mistake is reported at its field path and YAML line."""
    loaded, issues = check_text(text)
    assert loaded is None
    found = [i for i in issues if i.dotted == path]
    assert found, f"{what}: no issue at {path}; got {[i.format() for i in issues]}"
    issue = found[0]
    if line is not None:
        assert issue.line == line, issue.format()
    assert fragment in issue.message, issue.format()


def test_the_base_file_is_valid() -> None:
    """The unedited file of the table above loads, with its two variants merged."""
    loaded, issues = check_text(BASE)
    assert issues == [] and loaded is not None
    quiet, busy = loaded.variants
    assert quiet.core.controller.policy.name == "gdc"
    assert quiet.policy_params == {}  # a new policy name replaces the base's params
    assert busy.policy_params == {"interval_s": 3600.0, "threshold": 0.05}


def test_every_problem_is_reported_at_once(tmp_path) -> None:
    """A file with several mistakes lists all of them, in file order, with its name."""
    text = edit("duration: 1d", "duration: 1 fortnight")
    text = text.replace("seeds: 2", "seeds: -1").replace("network: digits_mlp", "network: x")
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ScenarioInvalid) as info:
        load_scenario(f)
    issues = info.value.issues
    assert [i.dotted for i in issues] == ["seeds", "duration", "workload"]
    assert [i.line for i in issues] == [3, 4, 7]
    assert f"{f}:4: duration:" in str(info.value)


def test_user_policy_by_dotted_path() -> None:
    """A user policy named by package.module:Class is imported and given its parameters."""
    text = edit("name: threshold\n    params: {interval_s: 6h, threshold: 0.05}",
                "name: tests.controller.scenario.user_policy:DailyCheck\n    params: {interval_s: 12h}")  # fmt: skip
    text = text.split("variants:")[0]
    loaded, issues = check_text(text)
    assert issues == [] and loaded is not None
    assert loaded.variants[0].policy_params == {"interval_s": 43200.0}


def test_nothing_in_a_scenario_is_evaluated() -> None:
    """YAML object tags are refused: the safe loader constructs no Python objects."""
    text = edit("seeds: 2", "seeds: !!python/object/apply:os.system ['echo hacked']")
    loaded, issues = check_text(text)
    assert loaded is None and any("not valid YAML" in i.message for i in issues)


def test_log_spaced_evaluation_times() -> None:
    """A log-spaced spec becomes that many times from start to the duration (the default stop)."""
    text = edit("  times: [1s, 1h, 1d]", "  log_spaced: {start: 1s, points: 4}")
    loaded, issues = check_text(text)
    assert issues == [] and loaded is not None
    times = loaded.variants[0].eval_times_s
    assert len(times) == 4 and times[0] == 1.0 and times[-1] == 86400.0
    bad, issues = check_text(
        edit("  times: [1s, 1h, 1d]", "  log_spaced: {start: 1s, stop: 2d, points: 4}")
    )
    assert bad is None and [i.dotted for i in issues] == ["evaluation.log_spaced.stop"]


def test_exponent_floats_are_numbers() -> None:
    """YAML 1.2 exponent floats (2.0e5, 1e6), strings to PyYAML's YAML 1.1 rules, are read
    as numbers, and the budget policy gets a number."""
    text = edit("name: threshold\n    params: {interval_s: 6h, threshold: 0.05}",
                "name: budget\n    params: {budget_pj_per_day: 2.0e5, initial_pj_per_device: 1e2}")  # fmt: skip
    loaded, issues = check_text(text.split("variants:")[0])
    assert issues == [] and loaded is not None
    assert loaded.raw["controller"]["policy"]["params"] == {
        "budget_pj_per_day": 200000.0, "initial_pj_per_device": 100.0}  # fmt: skip
    assert loaded.variants[0].policy_params["budget_pj_per_day"] == 200000.0


def test_a_user_policy_path_is_the_scenario_folders(tmp_path, monkeypatch) -> None:
    """A relative file path or module of a user policy is looked up in the scenario file's
    folder, whatever the working directory, and the runs get that folder."""
    from controller.firmware.policies import load_policy

    folder = tmp_path / "study"
    (folder / "firmware").mkdir(parents=True)
    policy = "from controller.firmware.policies import BasePolicy\n\nclass Mine(BasePolicy):\n"
    policy += "    name = 'mine'\n\n    def __init__(self, interval_s: float = 1.0) -> None:\n"
    policy += "        self.interval_s = interval_s\n"
    (folder / "mine.py").write_text(policy)
    (folder / "firmware" / "__init__.py").write_text("")
    (folder / "firmware" / "guard_x1.py").write_text(policy)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    for name in ("mine.py:Mine", "firmware.guard_x1:Mine"):
        text = BASE.split("variants:")[0].replace("name: threshold", f"name: {name}")
        text = text.replace("{interval_s: 6h, threshold: 0.05}", "{interval_s: 6h}")
        (folder / "s.yaml").write_text(text)
        loaded = load_scenario(folder / "s.yaml")
        v = loaded.variants[0]
        assert v.policy_dir == str(folder.resolve()) and v.policy_params == {"interval_s": 21600.0}
        assert load_policy(name, v.policy_params, v.policy_dir).interval_s == 21600.0
    text = BASE.split("variants:")[0].replace("name: threshold", "name: nothere.py:Mine")
    with pytest.raises(ScenarioInvalid, match=r"cannot import 'nothere.py'.*no such file"):
        load_scenario(_write(folder / "bad.yaml", text))


def _write(path, text):
    path.write_text(text)
    return path
