#!/usr/bin/env bash
# The GRPO baseline of colbench_infopo.sh: the identical multi-turn rollout with the same user simulator and judge,
# without the information-gain scoring, and verl's own GRPO advantage.
#
# Every shared setting and knob lives in _colbench_common.sh; only the two lines below differ from the InfoPO run.
#
#   COLBENCH_SOURCE=/path/to/collaborative_agent_bench OPENAI_API_KEY=... bash recipes/colbench_grpo.sh
#   DRY_RUN=1 bash recipes/colbench_grpo.sh             # print the composed config, start nothing
set -euo pipefail

EXPERIMENT_NAME=${EXPERIMENT_NAME:-colbench_grpo}

# shellcheck source=recipes/_colbench_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_colbench_common.sh"

infopo_main_ppo "${COLBENCH_OVERRIDES[@]}" \
    algorithm.adv_estimator=grpo \
    algorithm.infopo.info_gain=false \
    trainer.experiment_name="$EXPERIMENT_NAME" \
    "$@"
