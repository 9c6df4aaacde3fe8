"""Regenerates the published results from a run of the committed code: ONE command.

    python bench/results.py                                   # the main job -> docs/, README.md
    python bench/results.py --config experiments/smoke.yaml --out /tmp/r --readme /tmp/r/R.md

Runs the job's own ``tune`` command on fresh stores in a temporary folder, then writes

- ``<out>/results.md``: the job run's ``report.md`` under a header that names the commit and
  config it was produced from, the wall time and the machine (``tests/test_results.py`` fails
  when ``pipeline/`` or the main job's configs differ from that commit);
- ``<out>/comparison.png`` and ``<out>/tutorial.png``: the report's figures;
- the README's results table, between ``<!-- results:start -->`` and ``<!-- results:end -->``.

It refuses to run when ``pipeline/`` or the configs have uncommitted changes: the header would
name a commit the numbers did not come from.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACKED = ("pipeline/", "experiments/default.yaml", "experiments/tutorial.yaml")
"""What the results depend on: a change to any of these makes docs/results.md stale."""
HEADER = re.compile(r"<!-- results-of: commit=(?P<commit>[0-9a-f]{40}) config=(?P<config>\S+) -->")
START, END = "<!-- results:start -->", "<!-- results:end -->"
FIGURES = ("comparison.png", "tutorial.png")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def header(commit: str, config: str, wall_s: float, machine: str, load: str) -> str:
    """The provenance lines at the top of results.md (the first one is machine-read)."""
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!-- results-of: commit={commit} config={config} -->\n"
            f"Made by `python bench/results.py --config {config}` at commit `{commit[:10]}` on "
            f"{day}: the job's own `tune` command on fresh stores, {wall_s / 60:.1f} min wall, "
            f"on {machine} (load average before the run: {load}). This file is the job run's "
            f"`report.md`; figures: [comparison](comparison.png), [tutorial](tutorial.png).\n\n")


def read_header(text: str) -> tuple[str, str] | None:
    """(commit, config) from a results.md, or None when it has no header."""
    m = HEADER.search(text)
    return (m["commit"], m["config"]) if m else None


def first_table(markdown: str) -> str:
    """The first Markdown table of ``markdown`` (the report's results table)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


def replace_between_markers(text: str, new: str) -> str:
    """``text`` with what lies between the results markers replaced by ``new``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    a, b = text.find(START), text.find(END)
    if a < 0 or b < a:
        raise ValueError(f"the README needs {START} ... {END} around its results table")
    return text[: a + len(START)] + "\n" + new + text[b:]


def run_job(config: Path, folder: Path, extra: list[str] | None = None) -> float:
    """The main job exactly as users start it, on fresh stores in ``folder``; its wall time.
    ``extra`` is appended to the ``tune`` command (e.g. ``--workers auto``)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "pipeline", "-q", "tune", "--config", str(config),
           "--storage", f"sqlite:///{folder / 'optuna.db'}", *(extra or [])]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=folder, env={**env, "PYTHONPATH": str(ROOT)}, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def fetch_report(folder: Path, dst: Path) -> str:
    """The job run's report.md (returned) and its figures (copied into ``dst``)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = [e.experiment_id for e in client.search_experiments()]
    (job,) = client.search_runs(exp, filter_string="tags.`cellstudy.level` = 'job'")
    local = Path(client.download_artifacts(job.info.run_id, "", str(folder / "artifacts")))
    for name in FIGURES:
        shutil.copy(local / "report" / name, dst / name)
    return (local / "report.md").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/default.yaml",
                        help="the job's config, relative to the repository")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where results.md and the "
                        "figures go (default: docs/)")
    parser.add_argument("--readme", default=str(ROOT / "README.md"),
                        help="the README whose results table is replaced")
    parser.add_argument("--tune-arg", dest="tune_args", action="append", default=[],
                        metavar="ARG", help="passed on to the tune command, e.g. "
                        "--tune-arg=--workers --tune-arg=auto")
    args = parser.parse_args()
    dirty = git("status", "--porcelain", "--", *TRACKED, args.config)
    if dirty:
        sys.exit(f"error: uncommitted changes in what the results depend on:\n{dirty}\n"
                 "commit them first: the header names the commit the numbers came from")
    commit = git("rev-parse", "HEAD")
    sys.path.insert(0, str(ROOT))
    from pipeline.render import machine

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="cellstudy-results-") as tmp:
        wall = run_job(ROOT / args.config, Path(tmp), args.tune_args)
        report = fetch_report(Path(tmp), out)
    (out / "results.md").write_text(header(commit, args.config, wall, machine(), load) + report)
    readme = Path(args.readme)
    if readme.exists():
        table = (f"Made by `python bench/results.py` at commit `{commit[:10]}` in "
                 f"{wall / 60:.1f} min ({' '.join(args.tune_args) or 'one worker'}, load average "
                 f"{load.split()[0]} before the run); the whole report is "
                 f"[docs/results.md](docs/results.md)."
                 f"\n\n{first_table(report)}")
        readme.write_text(replace_between_markers(readme.read_text(), table))
    print(f"results of {commit[:10]} ({args.config}) written to {out}/results.md in "
          f"{wall:.0f} s")


if __name__ == "__main__":
    main()
