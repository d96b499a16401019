#!/usr/bin/env bash
# InfoPO on tau2-bench (retail, airline, telecom): the paper's run (SPEC section 1: Qwen2.5-7B-Instruct,
# GPT-4o-mini as the customer, 4 GPUs). Needs `pip install "infopo-verl[tau2]"`.
#
# Every shared setting and knob lives in _tau2_common.sh (MODEL_PATH, N_GPUS, DATA_DIR, USER_BACKEND,
# USER_BASE_URL, OPENAI_API_KEY, ...); the GRPO baseline tau2_grpo.sh differs from this run only in the two lines
# below. Evaluation as the paper did (test split, 4 trials per task, customer at temperature 0): docs/recipes.md.
#
#   OPENAI_API_KEY=... bash recipes/tau2_infopo.sh
#   DRY_RUN=1 bash recipes/tau2_infopo.sh               # print the composed config, start nothing
set -euo pipefail

EXPERIMENT_NAME=${EXPERIMENT_NAME:-tau2_infopo}

# shellcheck source=recipes/_tau2_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_tau2_common.sh"

infopo_main_ppo "${TAU2_OVERRIDES[@]}" \
    algorithm.adv_estimator=infopo \
    algorithm.infopo.info_gain=true \
    trainer.experiment_name="$EXPERIMENT_NAME" \
    "$@"
