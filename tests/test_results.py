"""Results freshness: docs/results.md and the README's table come from the committed code.

docs/results.md names the commit and config it was made from (``bench/results.py`` writes the
header); these tests fail when ``pipeline/`` or the main job's configs differ from that commit,
so stale numbers cannot land. Outside a git checkout (a source tarball) the check is skipped,
except under ``CI=true``, where it fails instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess

import pytest
from conftest import ROOT

REGENERATE = "python bench/results.py"


def _bench_results():
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "bench" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results = _bench_results()


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def _in_checkout() -> bool:
    try:
        return _git("rev-parse", "--is-inside-work-tree").stdout.strip() == "true"
    except OSError:  # no git at all
        return False


def _header() -> tuple[str, str]:
    found = results.read_header((ROOT / "docs" / "results.md").read_text())
    assert found, f"docs/results.md has no results-of header; regenerate: {REGENERATE}"
    return found


def test_results_header_names_the_main_job():
    _, config = _header()
    assert config == "experiments/default.yaml"


def test_results_come_from_the_committed_code():
    if not _in_checkout():
        if os.environ.get("CI") == "true":
            pytest.fail("not a git checkout: results freshness cannot be checked under CI")
        pytest.skip("not a git checkout")
    commit, config = _header()
    known = _git("cat-file", "-e", f"{commit}^{{commit}}")
    assert known.returncode == 0, (f"docs/results.md names commit {commit[:10]}, which this "
                                   f"checkout does not have; regenerate: {REGENERATE}")
    diff = _git("diff", "--name-only", commit, "HEAD", "--", *results.TRACKED, config)
    assert diff.returncode == 0, diff.stderr
    changed = diff.stdout.split()
    assert not changed, (f"docs/results.md is stale: made at {commit[:10]}, and since then "
                         f"{', '.join(changed)} changed; regenerate: {REGENERATE}")


def test_readme_table_is_the_reports_table():
    text = (ROOT / "README.md").read_text()
    start, end = text.find(results.START), text.find(results.END)
    assert 0 <= start < end, "README.md lacks the results markers"
    report = (ROOT / "docs" / "results.md").read_text()
    assert results.first_table(report.split("# Report", 1)[1]) in text[start:end]


def test_markers_replace_only_what_lies_between_them():
    text = f"a\n{results.START}\nold\n{results.END}\nb\n"
    assert results.replace_between_markers(text, "new\n") == (
        f"a\n{results.START}\nnew\n{results.END}\nb\n")
    with pytest.raises(ValueError, match="needs"):
        results.replace_between_markers("no markers", "x")


def test_header_round_trips():
    commit = "0123456789abcdef0123456789abcdef01234567"
    text = results.header(commit, "experiments/default.yaml", 300.0, "a machine", "0.5")
    assert results.read_header(text + "# Report") == (commit, "experiments/default.yaml")
    assert results.first_table("x\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nafter") == (
        "| a | b |\n|---|---|\n| 1 | 2 |\n")
