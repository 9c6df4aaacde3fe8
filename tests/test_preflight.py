"""Validation before any write: a property test that throws generated bad values at every config
field through the real CLI entry point, and the preflight checks one by one."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import typing
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import free_port

from pipeline import cli, preflight
from pipeline.config import ExperimentConfig, load_config

SMOKE = str(ROOT / "experiments" / "smoke.yaml")


def config_fields(cls: type = ExperimentConfig, prefix: str = "") -> list[tuple[str, typing.Any]]:
    """Every settable field as (dotted key, type), found by walking the dataclasses: a field
    added later is covered without touching this test."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += config_fields(tp, f"{key}.")
        else:
            out.append((key, tp))
    return out


FIELDS = config_fields()
CONTROL = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=31), min_size=1,
                  max_size=3)
# Values no field of its type accepts: non-finite and wrong-typed numbers, negatives (every
# number of ours is >= 0), text with control characters, containers where a scalar belongs.
NOT_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])
WRONG_TYPE = st.one_of(st.dictionaries(st.sampled_from("ab"), st.integers(), min_size=1,
                                       max_size=1),
                       st.just([[1]]))


def bad_scalar(tp: typing.Any) -> st.SearchStrategy:
    if tp is float:
        return st.one_of(NOT_FINITE, st.floats(max_value=-1e-9, allow_nan=False,
                                               allow_infinity=False), st.just("fast"),
                         WRONG_TYPE)
    if tp is int:
        return st.one_of(NOT_FINITE, st.integers(max_value=-1), st.just(2.5), st.just("many"),
                         WRONG_TYPE)
    if tp is str:
        return st.one_of(st.builds(lambda a, b: f"x{a}{b}", CONTROL, st.text(max_size=3)),
                         WRONG_TYPE)
    raise AssertionError(f"no strategy for {tp!r}: extend bad_value")  # a new kind of field


def bad_space() -> st.SearchStrategy:
    """Search spaces ``study.space`` must refuse: empty, an unknown or non-numeric path, a
    range that is empty, not finite or negative, a float range on an int field."""
    good = {"low": 0.001, "high": 0.1, "log": True}
    return st.one_of(
        st.just({}),
        st.sampled_from(["model.nope", "model.cell", "data.protocol", "study.name"]).map(
            lambda path: {path: good}),
        st.tuples(NOT_FINITE | st.floats(max_value=-1e-9, allow_nan=False,
                                         allow_infinity=False), st.just(0.1)).map(
            lambda lh: {"train.lr": {"low": lh[0], "high": lh[1]}}),
        st.just({"train.lr": {"low": 0.1, "high": 0.01}}),
        st.just({"model.hidden_size": {"low": 8.5, "high": 64, "type": "float"}}),
    )


def bad_value(tp: typing.Any) -> st.SearchStrategy:
    """A strategy of values the field of type ``tp`` must refuse."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is dict:  # study.space: the one mapping among the fields
        return bad_space()
    if typing.get_origin(tp) is not tuple:
        return bad_scalar(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        if dataclasses.is_dataclass(item):  # a list of eval sets: one with one bad field
            return st.sampled_from(config_fields(item)).flatmap(
                lambda kv: bad_value(kv[1]).map(lambda v, k=kv[0]: [{"name": "x", k: v}]
                                                if k != "name" else [{"name": v}]))
        return st.one_of(st.just([]), bad_scalar(item).map(lambda v: [v]))
    # a fixed-size pair: one bad item, or the wrong number of items
    return st.one_of(st.tuples(*(bad_scalar(a) for a in args)).map(list),
                     st.just([1.0, 2.0, 3.0]), st.just([]), NOT_FINITE)


@st.composite
def bad_setting(draw: st.DrawFn) -> tuple[str, typing.Any]:
    key, tp = draw(st.sampled_from(FIELDS))
    return key, draw(bad_value(tp))


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(setting=bad_setting())
def test_every_field_refuses_bad_values_before_anything_is_written(setting, tmp_path,
                                                                   monkeypatch):
    """Through ``cli.main`` in this process: exit 2, one line naming the field, no traceback,
    no store file, no run, no study. The tracking URI names a port nobody listens on, so a
    value that slipped through preflight is caught fast, by the wrong message."""
    key, value = setting
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("CELLSTUDY_STORAGE", raising=False)
    for name in cli.HTTP_LIMITS:
        monkeypatch.setenv(name, os.environ.get(name, cli.HTTP_LIMITS[name]))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["-q", "tune", "--config", SMOKE, "--set",
                         f"{key}={json.dumps(value)}"])
    lines = err.getvalue().strip().splitlines()
    assert code == 2, (key, value, err.getvalue())
    assert len(lines) == 1 and lines[0].startswith("error: "), (key, value, err.getvalue())
    assert key.split(".")[-1] in lines[0], (key, value, lines[0])
    assert "Traceback" not in err.getvalue() + out.getvalue()
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == [], "something was written"


def test_the_walk_reaches_nested_and_listed_fields():
    keys = {k for k, _ in FIELDS}
    assert {"train.lr", "data.val.n", "data.tests", "study.space",
            "report.tutorial_config"} <= keys


# -- preflight checks one by one -----------------------------------------------------------


@pytest.fixture
def smoke() -> ExperimentConfig:
    return load_config(SMOKE)


def test_sizes_beyond_memory_are_refused_up_front(smoke):
    huge = smoke.replace({"train.batch_size": 100_000, "train.steps": 100_000})
    with pytest.raises(preflight.PreflightError, match="train.steps x train.batch_size"):
        preflight.check_config(huge, "train")
    wide = smoke.replace({"study.space.model.hidden_size.high": 4096, "train.batch_size": 4096,
                          "data.seq_len": 100})
    with pytest.raises(preflight.PreflightError, match="study.space.model.hidden_size.high"):
        preflight.check_sizes(wide, "tune")
    preflight.check_sizes(load_config(ROOT / "experiments" / "default.yaml"), "tune")


@pytest.mark.parametrize(("url", "fragment"), [
    ("sqlite://", "names no database file"),
    ("sqlite:///:memory:", "names no database file"),
    ("sqlite:///{tmp}/missing/optuna.db", "does not exist"),
    ("journal://{tmp}/missing/journal.log", "does not exist"),
    ("sqlite:///{tmp}", "is a folder"),
])
def test_storage_targets_that_keep_nothing_or_cannot_be_made(url, fragment, tmp_path):
    with pytest.raises(preflight.PreflightError, match=fragment):
        preflight.check_storage_target("study.storage", url.format(tmp=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_tutorial_config_must_exist_and_load(smoke, tmp_path):
    with pytest.raises(preflight.PreflightError, match="does not exist"):
        preflight.check_tutorial_config(smoke.replace(
            {"report.tutorial_config": str(tmp_path / "nope.yaml")}))
    (tmp_path / "bad.yaml").write_text("train: {lr: -1}\n")
    with pytest.raises(preflight.PreflightError, match="does not load.*train.lr"):
        preflight.check_tutorial_config(smoke.replace(
            {"report.tutorial_config": str(tmp_path / "bad.yaml")}))
    preflight.check_tutorial_config(smoke)  # the shipped one


def test_model_uri_scheme_without_its_package(monkeypatch):
    monkeypatch.setitem(preflight.URI_SCHEME_PACKAGES, "s3", "no_such_module_here")
    with pytest.raises(preflight.PreflightError, match="needs the package 'no_such_module_here'"):
        preflight.check_model_uri("s3://bucket/model")
    preflight.check_model_uri("models:/sin2cos-lstm@champion")


def test_plot_path_format_and_folder(tmp_path):
    with pytest.raises(preflight.PreflightError, match="unknown image format 'xyz'"):
        preflight.check_plot_path("--plot", str(tmp_path / "a.xyz"))
    with pytest.raises(preflight.PreflightError, match="does not exist"):
        preflight.check_plot_path("--plot", str(tmp_path / "no" / "a.png"))
    preflight.check_plot_path("--plot", str(tmp_path / "a.png"))


def test_read_only_tracking_folder_is_one_line_within_seconds(other_user, shared_tmp):
    """Before: 103 s of MLflow's retries and 38 warning lines. As a second user (root writes
    anywhere), a tracking store in a folder it cannot write is refused by preflight."""
    import time

    from conftest import run_as

    tmp_path = shared_tmp
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o755)  # root's: the other user may read, not write
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(work, 0o777)
    os.chmod(tmp_path, 0o755)
    code = ("import sys\nfrom pipeline.cli import main\n"
            f"sys.exit(main(['-q', 'tune', '--config', {SMOKE!r}, '--set', "
            f"'report.tutorial_seeds=0', '--storage', 'sqlite:///{work}/optuna.db']))")
    start = time.monotonic()
    done = run_as(other_user, code, work, MLFLOW_TRACKING_URI=f"sqlite:///{readonly}/mlflow.db")
    assert time.monotonic() - start < 20
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: MLFLOW_TRACKING_URI: {readonly} is not writable "
        f"(tracking store sqlite:///{readonly}/mlflow.db)"]
    assert list(readonly.iterdir()) == [] and list(work.iterdir()) == []
