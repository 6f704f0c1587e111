#!/usr/bin/env bash
# The prepared check for a GPU node (one H200 with 16 cores was the last one lent), one call:
#   command: bash .device/run.sh bash bench/gpu_node.sh     carry: .whl .device
# (../shared/device/README.md: run.sh installs rlrings there). It writes under $OUT:
#   inference.json/.png  Act at 1, 8 and 64 callers, central against local, and one actor of 8
#                        Pong envs against its envs' ceiling (bench.inference);
#   pong/summary.json    rlrings up on Pong, 12 actors x 8 envs, central inference, the defaults
#                        (APPO with Atari's settings of record) until the evaluator confirms a mean
#                        raw score of 18 over 100 games, or 7 minutes: seconds and frames to the
#                        confirmation, frames/s while learning, how far behind the evaluator ran,
#                        the share of the time the learner's GPU was busy in updates;
#   ceiling.json         12 processes of the actors' own preprocessed Pong envs, random actions.
set -uo pipefail
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
python3 -m bench.inference --seconds 20 --act-seconds 8 --out "$OUT/inference.json" 2>&1 | tail -20
python3 - "$OUT/ceiling.json" <<'PY'
import json, sys
from concurrent.futures import ProcessPoolExecutor
from bench.atari import random_frames_per_second
from rlrings.ops.processes import usable_cores
threads = max(1, usable_cores() // 12)  # each process the C++ threads rlrings up gives each of 12 actors
with ProcessPoolExecutor(12) as pool:
    rates = list(pool.map(random_frames_per_second, ["ALE/Pong-v5"] * 12, [8] * 12, [20.0] * 12, [threads] * 12))
json.dump({"processes": 12, "envs_each": 8, "env_threads_each": threads, "frames_per_second": sum(rates)},
          open(sys.argv[1], "w"))
print("ceiling", sum(rates))
PY
timeout 480 python3 -m rlrings.ops.cli up --env ALE/Pong-v5 --actors 12 --envs-per-actor 8 --inference central \
  --max-seconds 420 --max-env-steps 5000000 --no-viewer --run-dir "$OUT/pong" > "$OUT/pong.log" 2>&1
python3 - "$OUT/pong/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
keys = ["solved", "seconds_to_confirm", "env_steps_to_solve", "env_frames_per_second", "mean_return_last_window",
        "evaluation_versions_behind_median", "evaluation_seconds_behind_median", "policy_lag_versions_median",
        "learner_device_busy_share"]
print({k: s.get(k) for k in keys})
PY
