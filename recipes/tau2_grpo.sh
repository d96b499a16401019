#!/usr/bin/env bash
# The GRPO baseline of tau2_infopo.sh: the identical multi-turn rollout with the same customer simulator, without
# the information-gain scoring, and verl's own GRPO advantage. Needs `pip install "infopo-verl[tau2]"`.
#
# Every shared setting and knob lives in _tau2_common.sh (MODEL_PATH, N_GPUS, DATA_DIR, USER_BACKEND,
# USER_BASE_URL, OPENAI_API_KEY, ...); only the two lines below differ from the InfoPO run.
#
#   OPENAI_API_KEY=... bash recipes/tau2_grpo.sh
#   DRY_RUN=1 bash recipes/tau2_grpo.sh                 # print the composed config, start nothing
set -euo pipefail

EXPERIMENT_NAME=${EXPERIMENT_NAME:-tau2_grpo}

# shellcheck source=recipes/_tau2_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_tau2_common.sh"

infopo_main_ppo "${TAU2_OVERRIDES[@]}" \
    algorithm.adv_estimator=grpo \
    algorithm.infopo.info_gain=false \
    trainer.experiment_name="$EXPERIMENT_NAME" \
    "$@"
