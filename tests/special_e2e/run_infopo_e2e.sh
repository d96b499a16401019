#!/usr/bin/env bash
# GPU end-to-end check (needs one CUDA GPU and verl[vllm]; never run by CI): the quickstart recipe, as a user runs
# it, for a few steps on a tiny local model: with InfoPO, with InfoPO scoring validation too, then its GRPO baseline.
#
# Checks, per run: main_ppo exits 0; a rollout dump exists for every training step (verl writes it after the
# update, so a dump per step means every step completed); and, from the validation dump, where each sample's
# score is the sum of its rm_scores next to the reward manager's breakdown:
#   InfoPO (default): validation is outcome-only: no turn was scored and score == outcome, as for GRPO;
#   InfoPO with algorithm.infopo.scoring.validation=true: score == outcome + info_gain_sum for every sample, and
#           some sample has a measured turn, i.e. rm_scores carry the per-turn information gains next to R;
#   GRPO:   no turn was scored (info_gain_count == 0) and score == outcome.
#
#   bash tests/special_e2e/run_infopo_e2e.sh            # from the repository root
set -euo pipefail

# ---- knobs (environment variables) ----
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-3}
# Everything this script writes (model, data, dumps, logs) goes here; a fresh temporary folder by default.
WORK_DIR=${WORK_DIR:-$(mktemp -d -t infopo-e2e-XXXXXX)}

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODEL_DIR=$WORK_DIR/tiny-model
DATA_DIR=$WORK_DIR/data
echo "[e2e] working in $WORK_DIR"

# A tiny Qwen2-style model and tokenizer built from code: no hub download, and small enough that a few steps take
# minutes. Its answers are random, which is enough: the check is the plumbing, not learning.
"$PYTHON" - "$MODEL_DIR" <<'PY'
import sys

from infopo_verl.local.tiny import build_model, build_tokenizer

path = sys.argv[1]
build_model(path, build_tokenizer(path))
PY

# run_quickstart NAME OVERRIDES...: the quickstart recipe (it prepares DATA_DIR on the first call) with settings
# small enough for the tiny model and a few steps; the log goes to WORK_DIR/NAME.log.
run_quickstart() {
    local name=$1
    shift
    MODEL_PATH=$MODEL_DIR DATA_DIR=$DATA_DIR TOTAL_STEPS=$STEPS TEST_FREQ=$STEPS N_GPUS=1 \
        GPU_MEMORY_UTILIZATION=0.3 PYTHON=$PYTHON EXPERIMENT_NAME=e2e_$name LOGGER='[console]' \
        bash "$REPO_ROOT/recipes/quickstart_clarify.sh" \
        data.train_batch_size=4 \
        data.val_max_samples=8 \
        data.dataloader_num_workers=0 \
        actor_rollout_ref.rollout.n=2 \
        actor_rollout_ref.actor.ppo_mini_batch_size=2 \
        actor_rollout_ref.rollout.enforce_eager=true \
        actor_rollout_ref.rollout.agent.num_workers=2 \
        reward.num_workers=2 \
        actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3 \
        algorithm.infopo.max_tokens_per_turn=32 \
        trainer.val_before_train=false \
        trainer.default_local_dir="$WORK_DIR/checkpoints/$name" \
        trainer.rollout_data_dir="$WORK_DIR/$name/rollouts" \
        trainer.validation_data_dir="$WORK_DIR/$name/validation" \
        "$@" 2>&1 | tee "$WORK_DIR/$name.log"
}

# check_run NAME MODE: the checks described at the top, on the dumps of run NAME (MODE: infopo or grpo).
check_run() {
    "$PYTHON" - "$WORK_DIR/$1" "$STEPS" "$2" <<'PY'
import json
import math
import sys
from pathlib import Path

run_dir, steps, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]  # mode: scored or outcome_only

missing = [step for step in range(1, steps + 1) if not (run_dir / "rollouts" / f"{step}.jsonl").is_file()]
assert not missing, f"{run_dir.name}: no rollout dump for training step(s) {missing}: those steps did not complete"

dumps = sorted((run_dir / "validation").glob("*.jsonl"))
assert dumps, f"{run_dir.name}: no validation dump in {run_dir / 'validation'}"
rows = [json.loads(line) for line in dumps[-1].read_text().splitlines() if line.strip()]
assert rows, f"{dumps[-1]} is empty"
needed = {"score", "outcome", "info_gain_sum", "info_gain_count"}
assert needed <= rows[0].keys(), f"{dumps[-1]} lacks {sorted(needed - rows[0].keys())}: is the infopo reward manager on?"

for number, row in enumerate(rows):
    # rm_scores is float32: compare with a tolerance that scales with the values summed.
    scale = 1.0 + abs(row["outcome"]) + abs(row["info_gain_sum"])
    expected = row["outcome"] + (row["info_gain_sum"] if mode == "scored" else 0.0)
    assert math.isclose(row["score"], expected, abs_tol=1e-3 * scale), (
        f"{run_dir.name}, validation sample {number}: sum(rm_scores)={row['score']} but outcome={row['outcome']} "
        f"and info_gain_sum={row['info_gain_sum']} ({mode} run)"
    )
scored = sum(row["info_gain_count"] > 0 for row in rows)
if mode == "scored":
    assert scored > 0, f"{run_dir.name}: no validation dialogue had a scored turn; the rollout measured nothing"
else:
    assert scored == 0, f"{run_dir.name}: {scored} validation dialogues were scored; validation must be outcome-only"
print(f"[e2e] {run_dir.name}: {steps} training steps completed; {len(rows)} validation samples checked, "
      f"{scored} with scored turns")
PY
}

run_quickstart infopo algorithm.adv_estimator=infopo algorithm.infopo.info_gain=true
check_run infopo outcome_only

run_quickstart infopo_scored_validation algorithm.adv_estimator=infopo algorithm.infopo.info_gain=true \
    algorithm.infopo.scoring.validation=true
check_run infopo_scored_validation scored

run_quickstart grpo algorithm.adv_estimator=grpo algorithm.infopo.info_gain=false
check_run grpo outcome_only

echo "[e2e] passed; outputs in $WORK_DIR"
