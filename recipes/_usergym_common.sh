# shellcheck shell=bash
# Sourced by usergym_infopo.sh and usergym_grpo.sh, never run on its own: every setting the two runs share, so the
# InfoPO run and its GRPO baseline cannot drift apart. Each recipe adds only its estimator and info_gain switch.
#
# The paper's UserGym run (SPEC section 1, table and "Shared" line): Qwen2.5-7B-Instruct without SFT warm-up,
# GPT-4o-mini as the training user simulator, 4 GPUs. The paper's hyperparameters are fixed below, not knobs:
# changing one means running something else (pass it as a Hydra override if that is what you want).

# ---- knobs (environment variables) ----
# Policy: the paper trains Qwen2.5-7B-Instruct and Qwen3-4B (for Qwen3 the paper samples at TEMPERATURE=0.6).
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-7B-Instruct}
TEMPERATURE=${TEMPERATURE:-1.0}
N_GPUS=${N_GPUS:-4}
NNODES=${NNODES:-1}
# Written by `infopo-verl prepare userrl` when absent, from UserRL's data in USERRL_SOURCE (a checkout of
# SalesforceAIResearch/UserRL, Apache-2.0, holding data/ and gyms/). Tau rows are left out (counted and printed): tau-bench is not on PyPI and its bridge is not
# written yet, so the mix is the paper's without Tau (1926 of 2426 training rows).
DATA_DIR=${DATA_DIR:-data/userrl}
USERRL_SOURCE=${USERRL_SOURCE:-data/UserRL}
# vLLM layout: tensor parallel size per rollout replica, and the share of GPU memory vLLM may take.
ROLLOUT_TP=${ROLLOUT_TP:-2}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}
# User simulator: the paper's is gpt-4o-mini through the OpenAI API. USER_BASE_URL points at any OpenAI-compatible
# server instead (e.g. `vllm serve` at http://localhost:8000/v1); USER_BACKEND=policy lets the policy's own servers
# play the user (no external API, not the paper's setting).
USER_BACKEND=${USER_BACKEND:-openai}
USER_MODEL=${USER_MODEL:-gpt-4o-mini}
USER_BASE_URL=${USER_BASE_URL:-}
USER_API_KEY_ENV=${USER_API_KEY_ENV:-OPENAI_API_KEY}
PROJECT_NAME=${PROJECT_NAME:-infopo_usergym}
LOGGER=${LOGGER:-[console]}
SAVE_FREQ=${SAVE_FREQ:-20}
TEST_FREQ=${TEST_FREQ:-10}

# ---- the paper's UserGym settings (SPEC section 1) ----
MAX_PROMPT_LENGTH=1152
MAX_RESPONSE_LENGTH=8192

# shellcheck source=recipes/_launch.sh
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"

# A missing key would otherwise surface minutes later, as the first simulator call fails inside a Ray worker.
if ! infopo_is_dry_run && [[ $USER_BACKEND == openai && -z $USER_BASE_URL && -z ${!USER_API_KEY_ENV:-} ]]; then
    echo "[recipe] $USER_API_KEY_ENV is not set, but the user simulator is $USER_MODEL through the OpenAI API." >&2
    echo "[recipe] Export $USER_API_KEY_ENV, or set USER_BASE_URL to an OpenAI-compatible server, or USER_BACKEND=policy." >&2
    exit 2
fi

DATA_DIR=$(infopo_abspath "$DATA_DIR")
infopo_prepare_data userrl "$DATA_DIR" --source "$USERRL_SOURCE" --exclude-family tau

# shellcheck source=recipes/_paper_shared.sh
source "$(dirname "${BASH_SOURCE[0]}")/_paper_shared.sh"

# Read by the recipes that source this file.
# shellcheck disable=SC2034
USERGYM_OVERRIDES=(
    "${PAPER_SHARED_OVERRIDES[@]}"
    data.train_files="$DATA_DIR/train.parquet"
    data.val_files="$DATA_DIR/test.parquet"
    # 64 prompts per step (5 rollouts each, mini-batches of 16: _paper_shared.sh).
    data.train_batch_size=64
    data.max_prompt_length="$MAX_PROMPT_LENGTH"
    data.max_response_length="$MAX_RESPONSE_LENGTH"
    # Max 16 agent turns (of at most 1024 tokens: _paper_shared.sh).
    actor_rollout_ref.rollout.multi_turn.max_assistant_turns=16
    # lr 3e-7 (the loss settings every run shares: _paper_shared.sh).
    actor_rollout_ref.actor.optim.lr=3e-7
    # Token budget of one micro-batch (ours; the trainer config selects token-budget micro-batches): two
    # full-length dialogues per GPU per forward pass.
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$(((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 2))
    # InfoPO: beta 0.5 and gate temperature 0.5 (paper, UserGym; the released-code advantage: _paper_shared.sh).
    algorithm.infopo.beta=0.5
    algorithm.infopo.gate_temperature=0.5
    # 5 epochs (about 100 steps in the paper's curves).
    trainer.total_epochs=5
)
