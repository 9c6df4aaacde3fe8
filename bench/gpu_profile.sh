#!/usr/bin/env bash
# Where a CUDA trial's time goes on a GPU host, for the record in docs/performance.md: a
# one-worker study of 6 default-config lstm trials (pruning off, lean report) under cProfile,
# and the gap between the last run's end and the process's exit. Writes $OUT/profile.txt.
#   bash bench/gpu_profile.sh              # on the GPU machine, from the repository root
#   DEVICE=cpu bash bench/gpu_profile.sh   # the same on the CPU
set -uo pipefail
cd "$(dirname "$0")/.."
DEST=${OUT:-bench}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export MLFLOW_TRACKING_URI="sqlite:///$TMP/mlflow.db" PYTHONUNBUFFERED=1
start=$(date +%s%3N)
timeout 120 python3 -m cProfile -o "$TMP/job.prof" -m pipeline -q tune \
  --config experiments/default.yaml --cells lstm --n-trials 6 --workers 1 --device "${DEVICE:-cuda}" \
  --set study.pruner_startup_trials=7 --set report.seeds=1 --set report.tutorial_seeds=0 \
  --storage "sqlite:///$TMP/optuna.db" >"$TMP/out.txt" 2>&1
echo "rc=$? wall_ms=$(($(date +%s%3N) - start))" | tee "$DEST/profile.txt"
python3 - "$TMP" "$start" <<'PY' >>"$DEST/profile.txt" 2>&1
import io, pstats, sqlite3, sys
tmp, start = sys.argv[1], int(sys.argv[2])
with sqlite3.connect(f"{tmp}/mlflow.db") as c:
    print("runs: first start, last end (ms after process start):",
          c.execute(f"select min(start_time)-{start}, max(end_time)-{start} from runs").fetchone())
s = pstats.Stats(f"{tmp}/job.prof", stream=sys.stdout)
s.sort_stats("cumulative").print_stats(r"pipeline/(cli|tuning|runs|tracking|report|train)\.py", 45)
s.sort_stats("tottime").print_stats(25)
PY
tail -3 "$TMP/out.txt" >>"$DEST/profile.txt"
