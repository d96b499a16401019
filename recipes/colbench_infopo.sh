#!/usr/bin/env bash
# InfoPO on ColBench backend programming (SPEC section 1: Qwen2.5-7B-Instruct, GPT-4o-mini as the user, 4 GPUs).
#
# Every shared setting and knob lives in _colbench_common.sh (MODEL_PATH, N_GPUS, COLBENCH_SOURCE, DATA_DIR,
# USER_BACKEND, USER_BASE_URL, OPENAI_API_KEY, COLBENCH_ISOLATION, ...); the GRPO baseline colbench_grpo.sh differs
# from this run only in the two lines below.
#
#   COLBENCH_SOURCE=/path/to/collaborative_agent_bench OPENAI_API_KEY=... bash recipes/colbench_infopo.sh
#   DRY_RUN=1 bash recipes/colbench_infopo.sh           # print the composed config, start nothing
set -euo pipefail

EXPERIMENT_NAME=${EXPERIMENT_NAME:-colbench_infopo}

# shellcheck source=recipes/_colbench_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_colbench_common.sh"

infopo_main_ppo "${COLBENCH_OVERRIDES[@]}" \
    algorithm.adv_estimator=infopo \
    algorithm.infopo.info_gain=true \
    trainer.experiment_name="$EXPERIMENT_NAME" \
    "$@"
