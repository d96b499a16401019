#!/usr/bin/env bash
# Quickstart: InfoPO on the built-in "clarify" task, on one GPU, with the scripted user (no model, no API key).
#
# The task hides 2-4 slots behind a vague request; the only way to get them is to ask, so information gain has an
# exact meaning here. Not a paper run: small batches and a short run so the whole loop (rollout, counterfactual
# scoring, gated advantage, update) is visible within minutes. The data is generated on first use.
#
#   bash recipes/quickstart_clarify.sh                       # train
#   DRY_RUN=1 bash recipes/quickstart_clarify.sh             # print the composed config, start nothing
#   bash recipes/quickstart_clarify.sh algorithm.infopo.beta=0.3   # any Hydra override goes last
set -euo pipefail

# ---- knobs (environment variables) ----
# Policy to train: a hub id or a local folder. Small, so the run fits next to vLLM on a single 24 GB GPU.
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-0.5B-Instruct}
N_GPUS=${N_GPUS:-1}
# Written by `infopo-verl prepare synthetic` when absent.
DATA_DIR=${DATA_DIR:-data/synthetic}
TOTAL_STEPS=${TOTAL_STEPS:-50}
# Validation every this many steps (the step count bounds the run, so validation also runs at the last step).
TEST_FREQ=${TEST_FREQ:-10}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.4}
PROJECT_NAME=${PROJECT_NAME:-infopo_quickstart}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-clarify_infopo}
LOGGER=${LOGGER:-[console]}

# Lengths of this task, not of a paper run: a request, up to 4 questions and one answer line.
MAX_PROMPT_LENGTH=1024
MAX_RESPONSE_LENGTH=2048

# shellcheck source=recipes/_launch.sh
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"

DATA_DIR=$(infopo_abspath "$DATA_DIR")
infopo_prepare_data synthetic "$DATA_DIR"

infopo_main_ppo \
    data.train_files="$DATA_DIR/train.parquet" \
    data.val_files="$DATA_DIR/test.parquet" \
    data.train_batch_size=16 \
    data.max_prompt_length=$MAX_PROMPT_LENGTH \
    data.max_response_length=$MAX_RESPONSE_LENGTH \
    data.filter_overlong_prompts=true \
    actor_rollout_ref.model.path="$MODEL_PATH" \
    actor_rollout_ref.model.use_remove_padding=true \
    actor_rollout_ref.model.enable_gradient_checkpointing=true \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=8 \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$(((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 2)) \
    actor_rollout_ref.actor.use_kl_loss=false \
    actor_rollout_ref.actor.entropy_coeff=0.001 \
    actor_rollout_ref.rollout.n=5 \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEMORY_UTILIZATION" \
    actor_rollout_ref.rollout.multi_turn.max_assistant_turns=6 \
    algorithm.adv_estimator=infopo \
    algorithm.infopo.max_tokens_per_turn=256 \
    algorithm.infopo.user.backend=scripted \
    trainer.n_gpus_per_node="$N_GPUS" \
    trainer.nnodes=1 \
    trainer.total_epochs=1000 \
    trainer.total_training_steps="$TOTAL_STEPS" \
    trainer.test_freq="$TEST_FREQ" \
    trainer.save_freq=-1 \
    trainer.val_before_train=true \
    trainer.project_name="$PROJECT_NAME" \
    trainer.experiment_name="$EXPERIMENT_NAME" \
    trainer.logger="$LOGGER" \
    "$@"
