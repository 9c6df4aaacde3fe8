#!/usr/bin/env bash
# The GPU check, one script for a machine with a CUDA card (at most 8 minutes):
#   1. the test suite on CUDA (device "auto" picks the GPU; tests/test_cuda.py runs its CUDA
#      cases: CUDA graph vs eager, CUDA vs CPU, system metrics with GPU fields),
#   2. a short study on CUDA (smoke config, one cell), its runs' device and GPU system metrics,
#   3. the CUDA-trained champion loaded and run on the CPU (no GPU visible),
#   4. time per training step: CPU vs CUDA eager vs CUDA graph (bench/steps.py),
#   5. issue 8's GPU goals (bench/gpu_speed.py, about 6 minutes): the default main job with
#      --workers auto on CUDA (<= 20 s), trials/s with 1-16 CUDA workers and 16 CPU workers
#      (what auto should pick), a default trial on CUDA vs this host's CPU with its bookkeeping (>= 5x), and
#      peer_speedup on CUDA (>= 5x).
# Results go to $OUT/gpu_check.json (or bench/gpu_check.json), the logs to gpu_check_logs.tgz
# beside it (refreshed after each part; a lease returns only a few files). Each part is
# timed out on its own and its failure is recorded, so one broken part does not hide the rest.
#
#   bash bench/gpu_check.sh                         # from the repository root: parts 1-5
#   bash bench/gpu_check.sh checks                  # parts 1-4 only (about 8 minutes)
#   bash bench/gpu_check.sh speed tests_cuda study  # the parts named, in that order (tests_cuda,
#                                                   # tests_fast, study, steps, speed, or one
#                                                   # of speed's: main_job workers trial peer)
# Environment: SPEED_LIMIT_<part> (seconds a speed part may take), GPU_SPEED_MAIN_RUNS and
# GPU_SPEED_TRIALS (see bench/gpu_speed.py).
# In a short lease, name what matters most first: a part cut off leaves the ones before it.
# On the CPU it runs every part that does not need a GPU and says what it skipped.
# Carried wheels (a lent machine has no mlflow/optuna; bench/gpu_wheels.sh makes .whl/ where
# an index is reachable), compiled on all cores before anything is timed: uncompiled, every
# worker process compiled them again (8.8 s in one profile).
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && python3 -m compileall -q -j 0 /tmp/site >/dev/null 2>&1; export PYTHONPATH=/tmp/site:$PWD; fi
set -uo pipefail
cd "$(dirname "$0")/.."
# The lent machines set PYTHONDONTWRITEBYTECODE=1 and their torch ships no bytecode, so every
# process compiled its sources again (14.1 s for the imports of a cold process on the H200
# host, 6.4 s once cached); a user's install has bytecode. Cached here, outside the read-only
# packages. (The main job's time did not move with it: 55.9 s against 55.5 s.)
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/pycache}
export PYTHONPATH="${PYTHONPATH:-$PWD}"
case ":$PYTHONPATH:" in *":$PWD:"*) ;; *) export PYTHONPATH="$PYTHONPATH:$PWD" ;; esac
PY=${PYTHON:-python3}
DEST=${OUT:-bench}
mkdir -p "$DEST"
TMP=$(mktemp -d)
LOGS=$TMP/logs
mkdir -p "$LOGS"
trap 'rm -rf "$TMP"' EXIT
export MLFLOW_TRACKING_URI="sqlite:///$TMP/mlflow.db" PYTHONUNBUFFERED=1
unset MLFLOW_RUN_ID
declare -A STATUS

part() {  # part NAME SECONDS COMMAND... : runs with a timeout, logs, records the exit status
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" >"$LOGS/gpu_check_$name.log" 2>&1
  local rc=$?
  STATUS[$name]="rc=$rc seconds=$((SECONDS - start))"
  echo "   ${STATUS[$name]}; last lines:"
  tail -n 5 "$LOGS/gpu_check_$name.log" | sed 's/^/   | /'
  tar czf "$DEST/gpu_check_logs.tgz" -C "$TMP" logs
}

$PY - <<'EOF' >"$LOGS/gpu_check_env.log" 2>&1
import importlib, platform
import torch
print("python", platform.python_version(), "torch", torch.__version__,
      "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
for mod in ("numpy", "yaml", "matplotlib", "mlflow", "optuna", "pytest", "psutil", "pynvml"):
    try:
        m = importlib.import_module(mod)
        print(mod, getattr(m, "__version__", "?"))
    except Exception as err:  # noqa: BLE001
        print(mod, "MISSING", type(err).__name__, err)
EOF
cat "$LOGS/gpu_check_env.log"
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
HAVE_MLFLOW=$($PY -c "import mlflow, optuna" >/dev/null 2>&1 && echo 1 || echo 0)

PARTS=("$@")
[ ${#PARTS[@]} = 0 ] && PARTS=(all)
[ "${PARTS[*]}" = all ] && PARTS=(tests_cuda tests_fast study steps speed)
[ "${PARTS[*]}" = checks ] && PARTS=(tests_cuda tests_fast study steps)
DEVICE=$([ "$CUDA" = 1 ] && echo cuda || echo cpu)

run_part() {
  case $1 in
  tests_cuda)  # 1. Tests on CUDA: graphs, fused Adam, CUDA vs CPU, out of memory.
    part tests_cuda 60 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py ;;
  tests_fast)  # 1b. The rest of the fast suite with the GPU visible.
    if [ "$HAVE_MLFLOW" = 1 ]; then
      part tests_fast 120 $PY -m pytest -q -x -p no:cacheprovider -m "not slow" \
        tests/test_train.py tests/test_model.py tests/test_data.py tests/test_tuning.py
    else STATUS[tests_fast]="skipped: mlflow/optuna not importable"; fi ;;
  study)  # 2 + 3. A short study on CUDA, then its champion on the CPU.
    if [ "$HAVE_MLFLOW" = 1 ]; then
      # The study trains for seconds: sample system metrics every second, not MLflow's 10 s.
      part study 60 env MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL=1 $PY -m pipeline -q tune \
        --config experiments/smoke.yaml --cells lstm --device "$DEVICE" \
        --storage "sqlite:///$TMP/optuna.db" --set study.n_trials=3 \
        --set train.steps=100 --set train.eval_every=20
      part champion_on_cpu 30 env CUDA_VISIBLE_DEVICES= $PY bench/gpu_champion.py
    else
      STATUS[study]="skipped: mlflow/optuna not importable"
      STATUS[champion_on_cpu]="skipped: mlflow/optuna not importable"
    fi ;;
  steps)  # 4. Time per training step on each device and path.
    part steps 90 $PY -c "
import json, sys
sys.path.insert(0, 'bench')
import torch
torch.set_num_threads(1)
import steps
out = {'device_steps': steps.device_steps(100, 5)}
json.dump(out, open('$DEST/gpu_steps.json', 'w'), indent=2)
print(json.dumps(out, indent=2))" ;;
  speed)  # 5. Issue 8's GPU goals, each a whole job on fresh stores.
    for p in main_job workers trial peer; do run_part "$p"; done ;;
  main_job|workers|trial|peer)  # 5, one of its parts (limits: SPEED_LIMIT_<part> seconds)
    if [ "$CUDA" = 1 ] && [ "$HAVE_MLFLOW" = 1 ]; then
      local limit_var="SPEED_LIMIT_$1" default
      case $1 in main_job|workers) default=150 ;; trial) default=90 ;; peer) default=80 ;; esac
      part "speed_$1" "${!limit_var:-$default}" $PY bench/gpu_speed.py "$1"
    else STATUS[speed_$1]="skipped: needs CUDA, mlflow and optuna"; fi ;;
  *) echo "unknown part $1 (tests_cuda, tests_fast, study, steps, speed or one of its parts:"\
       "main_job, workers, trial, peer; all; checks)"; exit 2 ;;
  esac
}
for p in "${PARTS[@]}"; do run_part "$p"; done

$PY - "$DEST" "$LOGS" <<EOF
import json, os, sys
dest, logs = sys.argv[1], sys.argv[2]
status = {$(for k in "${!STATUS[@]}"; do printf '"%s": "%s", ' "$k" "${STATUS[$k]}"; done)}
out = {"status": status, "env": open(os.path.join(logs, "gpu_check_env.log")).read().splitlines()}
for name in ("gpu_steps.json", *(f"gpu_speed_{p}.json" for p in
                                 ("main_job", "trial", "peer", "workers"))):
    path = os.path.join(dest, name)
    if os.path.exists(path):
        out[name[:-5]] = json.load(open(path))
log = os.path.join(logs, "gpu_check_champion_on_cpu.log")
if os.path.exists(log):
    lines = [l for l in open(log).read().splitlines() if l.startswith("{")]
    out["champion_on_cpu"] = json.loads(lines[-1]) if lines else None
with open(os.path.join(dest, "gpu_check.json"), "w") as f:
    json.dump(out, f, indent=2)
print(json.dumps(out["status"], indent=2))
print("written to", os.path.join(dest, "gpu_check.json"))
EOF
