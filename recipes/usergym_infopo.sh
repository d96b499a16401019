#!/usr/bin/env bash
# InfoPO on UserGym: the paper's main run (SPEC section 1: Qwen2.5-7B-Instruct, GPT-4o-mini as the user, 4 GPUs).
#
# Every shared setting and knob lives in _usergym_common.sh (MODEL_PATH, N_GPUS, DATA_DIR, USER_BACKEND,
# USER_BASE_URL, OPENAI_API_KEY, ...); the GRPO baseline usergym_grpo.sh differs from this run only in the two
# lines below.
#
#   OPENAI_API_KEY=... bash recipes/usergym_infopo.sh
#   DRY_RUN=1 bash recipes/usergym_infopo.sh            # print the composed config, start nothing
set -euo pipefail

EXPERIMENT_NAME=${EXPERIMENT_NAME:-usergym_infopo}

# shellcheck source=recipes/_usergym_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_usergym_common.sh"

infopo_main_ppo "${USERGYM_OVERRIDES[@]}" \
    algorithm.adv_estimator=infopo \
    algorithm.infopo.info_gain=true \
    trainer.experiment_name="$EXPERIMENT_NAME" \
    "$@"
