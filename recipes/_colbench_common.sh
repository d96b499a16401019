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

# shellcheck source=recipes/_launch.sh
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"

if ! infopo_is_dry_run && [[ $USER_BACKEND == openai && -z $USER_BASE_URL && -z ${!USER_API_KEY_ENV:-} ]]; then
    echo "[recipe] $USER_API_KEY_ENV is not set, but the user simulator is $USER_MODEL through the OpenAI API." >&2
    echo "[recipe] Export $USER_API_KEY_ENV, or set USER_BASE_URL to an OpenAI-compatible server, or USER_BACKEND=policy." >&2
    exit 2
fi

DATA_DIR=$(infopo_abspath "$DATA_DIR")
infopo_prepare_data colbench "$DATA_DIR" --source "$COLBENCH_SOURCE"

# Read by the recipes that source this file.
# shellcheck disable=SC2034
COLBENCH_OVERRIDES=(
    data.train_files="$DATA_DIR/train.parquet"
    data.val_files="$DATA_DIR/test.parquet"
    # 64 prompts per step, 5 rollouts each, PPO mini-batches of 16 prompts (verl counts mini-batches in prompts).
    data.train_batch_size=64
    actor_rollout_ref.rollout.n=5
    actor_rollout_ref.actor.ppo_mini_batch_size=16
    data.max_prompt_length="$MAX_PROMPT_LENGTH"
    data.max_response_length="$MAX_RESPONSE_LENGTH"
    data.filter_overlong_prompts=true
    # ColBench's protocol: at most 10 agent turns (the environment ends the dialogue itself at 10 too), each of at
    # most 1024 tokens.
    actor_rollout_ref.rollout.multi_turn.max_assistant_turns=10
    algorithm.infopo.max_tokens_per_turn=1024
    actor_rollout_ref.model.path="$MODEL_PATH"
    actor_rollout_ref.model.use_remove_padding=true
    actor_rollout_ref.model.enable_gradient_checkpointing=true
    # Optimiser and loss (paper, shared by its runs): lr 3e-7, PPO clip 0.2 with dual-clip 3.0, token-mean loss,
    # 1 PPO epoch, entropy 0.001, no KL loss and no KL in the reward, gradient clipping at 1.0.
    actor_rollout_ref.actor.optim.lr=3e-7
    actor_rollout_ref.actor.clip_ratio=0.2
    actor_rollout_ref.actor.clip_ratio_low=0.2
    actor_rollout_ref.actor.clip_ratio_high=0.2
    actor_rollout_ref.actor.clip_ratio_c=3.0
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    actor_rollout_ref.actor.ppo_epochs=1
    actor_rollout_ref.actor.entropy_coeff=0.001
    actor_rollout_ref.actor.use_kl_loss=false
    algorithm.use_kl_in_reward=false
    actor_rollout_ref.actor.grad_clip=1.0
    # Token budget of one micro-batch (ours): two full-length dialogues per GPU per forward pass.
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$(((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 2))
    # Sampling temperature 0.6 (paper, ColBench).
    actor_rollout_ref.rollout.temperature=0.6
    actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP"
    actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEMORY_UTILIZATION"
    # InfoPO: beta 0.3 and gate temperature 0.5 (paper, ColBench); the released code's advantage
    # (normalization=token, magnitude_bound=true), as in the UserGym recipes.
    algorithm.infopo.beta=0.3
    algorithm.infopo.gate_temperature=0.5
    algorithm.infopo.normalization=token
    algorithm.infopo.magnitude_bound=true
    algorithm.infopo.user.backend="$USER_BACKEND"
    algorithm.infopo.user.model="$USER_MODEL"
    algorithm.infopo.user.base_url="${USER_BASE_URL:-null}"
    algorithm.infopo.user.api_key_env="$USER_API_KEY_ENV"
    # ColBench's simulator runs at temperature 0 (its evaluation setting; the plugin's default too).
    algorithm.infopo.user.temperature=0.0
    +algorithm.infopo.env.colbench_isolation="$COLBENCH_ISOLATION"
    # 3 epochs (about 300 steps in the paper's curves).
    trainer.total_epochs=3
    trainer.n_gpus_per_node="$N_GPUS"
    trainer.nnodes="$NNODES"
    trainer.save_freq="$SAVE_FREQ"
    trainer.test_freq="$TEST_FREQ"
    trainer.val_before_train=true
    trainer.project_name="$PROJECT_NAME"
    trainer.logger="$LOGGER"
)
