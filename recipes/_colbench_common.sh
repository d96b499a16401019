# shellcheck shell=bash
# Sourced by colbench_infopo.sh and colbench_grpo.sh, never run on its own: every setting the two runs share, so
# the InfoPO run and its GRPO baseline cannot drift apart. Each recipe adds only its estimator and info_gain switch.
#
# The paper's ColBench run (SPEC section 1, table and "Shared" line): Qwen2.5-7B-Instruct without SFT warm-up,
# GPT-4o-mini as the training user simulator, 4 GPUs. The paper's hyperparameters are fixed below, not knobs:
# changing one means running something else (pass it as a Hydra override if that is what you want).

# ---- knobs (environment variables) ----
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-7B-Instruct}
N_GPUS=${N_GPUS:-4}
NNODES=${NNODES:-1}
# Written by `infopo-verl prepare colbench` when absent, from COLBENCH_SOURCE: your own download of the Hugging Face
# dataset facebook/collaborative_agent_bench (CC-BY-NC; this project never downloads or ships it), the folder
# holding backend_tasks/ (or backend_tasks/ itself). 1000 training and 100 test tasks, as the paper's preprocessing.
DATA_DIR=${DATA_DIR:-data/colbench}
COLBENCH_SOURCE=${COLBENCH_SOURCE:-data/collaborative_agent_bench}
# The judge's sandbox: `namespaces` (Linux, root; the default) or `none`, which runs the agent's code without
# namespaces and so lets it read the reference code: accept that risk only knowingly (docs/recipes.md).
COLBENCH_ISOLATION=${COLBENCH_ISOLATION:-namespaces}
ROLLOUT_TP=${ROLLOUT_TP:-2}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}
# User simulator: the paper's is gpt-4o-mini through the OpenAI API; USER_BASE_URL points at any OpenAI-compatible
# server instead, USER_BACKEND=policy lets the policy's own servers play the user (not the paper's setting).
USER_BACKEND=${USER_BACKEND:-openai}
USER_MODEL=${USER_MODEL:-gpt-4o-mini}
USER_BASE_URL=${USER_BASE_URL:-}
USER_API_KEY_ENV=${USER_API_KEY_ENV:-OPENAI_API_KEY}
PROJECT_NAME=${PROJECT_NAME:-infopo_colbench}
LOGGER=${LOGGER:-[console]}
SAVE_FREQ=${SAVE_FREQ:-20}
TEST_FREQ=${TEST_FREQ:-10}

# ---- the paper's ColBench settings (SPEC section 1) ----
MAX_PROMPT_LENGTH=2048
MAX_RESPONSE_LENGTH=8192

# shellcheck source=recipes/_paper_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_paper_common.sh"

DATA_DIR=$(infopo_abspath "$DATA_DIR")
infopo_prepare_data colbench "$DATA_DIR" --source "$COLBENCH_SOURCE"

# Read by the recipes that source this file.
# shellcheck disable=SC2034
COLBENCH_OVERRIDES=(
    "${PAPER_OVERRIDES[@]}"
    data.train_files="$DATA_DIR/train.parquet"
    data.val_files="$DATA_DIR/test.parquet"
    # 64 prompts per step, 5 rollouts each, PPO mini-batches of 16 prompts (verl counts mini-batches in prompts).
    data.train_batch_size=64
    actor_rollout_ref.rollout.n=5
    actor_rollout_ref.actor.ppo_mini_batch_size=16
    # ColBench's protocol: at most 10 agent turns (the environment ends the dialogue itself at 10 too), each of at
    # most 1024 tokens.
    actor_rollout_ref.rollout.multi_turn.max_assistant_turns=10
    algorithm.infopo.max_tokens_per_turn=1024
    actor_rollout_ref.actor.optim.lr=3e-7
    # Sampling temperature 0.6 (paper, ColBench).
    actor_rollout_ref.rollout.temperature=0.6
    # InfoPO: beta 0.3 and gate temperature 0.5 (paper, ColBench).
    algorithm.infopo.beta=0.3
    algorithm.infopo.gate_temperature=0.5
    # ColBench's simulator runs at temperature 0 (its evaluation setting; the plugin's default too).
    algorithm.infopo.user.temperature=0.0
    +algorithm.infopo.env.colbench_isolation="$COLBENCH_ISOLATION"
    # 3 epochs (about 300 steps in the paper's curves).
    trainer.total_epochs=3
)
