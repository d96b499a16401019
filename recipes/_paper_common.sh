# shellcheck shell=bash
# Sourced by the benchmark settings files (_usergym_common.sh, _colbench_common.sh, _tau2_common.sh), never run on its own: what
# every paper run shares (SPEC section 1, "Shared" line), so the benchmarks cannot drift apart on it. The sourcing
# file sets MAX_PROMPT_LENGTH, MAX_RESPONSE_LENGTH and the knobs below before sourcing this one.
#
# Knobs read here (each settings file gives its defaults): MODEL_PATH, N_GPUS, NNODES, ROLLOUT_TP,
# GPU_MEMORY_UTILIZATION, USER_BACKEND, USER_MODEL, USER_BASE_URL, USER_API_KEY_ENV, PROJECT_NAME, LOGGER,
# SAVE_FREQ, TEST_FREQ; optionally TOKENS_PER_MICRO_BATCH.

# shellcheck source=recipes/_launch.sh
source "$(dirname "${BASH_SOURCE[0]}")/_launch.sh"

# A missing key would otherwise surface minutes later, as the first simulator call fails inside a Ray worker.
if ! infopo_is_dry_run && [[ $USER_BACKEND == openai && -z $USER_BASE_URL && -z ${!USER_API_KEY_ENV:-} ]]; then
    echo "[recipe] $USER_API_KEY_ENV is not set, but the user simulator is $USER_MODEL through the OpenAI API." >&2
    echo "[recipe] Export $USER_API_KEY_ENV, or set USER_BASE_URL to an OpenAI-compatible server, or USER_BACKEND=policy." >&2
    exit 2
fi

# Read by the files that source this one.
# shellcheck disable=SC2034
PAPER_OVERRIDES=(
    data.max_prompt_length="$MAX_PROMPT_LENGTH"
    data.max_response_length="$MAX_RESPONSE_LENGTH"
    data.filter_overlong_prompts=true
    actor_rollout_ref.model.path="$MODEL_PATH"
    actor_rollout_ref.model.use_remove_padding=true
    actor_rollout_ref.model.enable_gradient_checkpointing=true
    # PPO clip 0.2 with dual-clip 3.0, token-mean loss, 1 PPO epoch, entropy 0.001, no KL loss and no KL in the
    # reward, gradient clipping at 1.0.
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
    # Token budget of one micro-batch (ours; the trainer config selects token-budget micro-batches): two
    # full-length dialogues per GPU per forward pass unless the settings file sets TOKENS_PER_MICRO_BATCH.
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu="${TOKENS_PER_MICRO_BATCH:-$(((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 2))}"
    actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP"
    actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEMORY_UTILIZATION"
    # normalization=token with magnitude_bound=true is the released code's advantage (r_t / L_t spread over each
    # turn's tokens, A_info capped at the scale of A_ext): the paper's numbers were produced by that code, so the
    # reproductions use it rather than the paper's per-turn equations (normalization=turn, the plugin's default).
    algorithm.infopo.normalization=token
    algorithm.infopo.magnitude_bound=true
    algorithm.infopo.user.backend="$USER_BACKEND"
    algorithm.infopo.user.model="$USER_MODEL"
    algorithm.infopo.user.base_url="${USER_BASE_URL:-null}"
    algorithm.infopo.user.api_key_env="$USER_API_KEY_ENV"
    trainer.n_gpus_per_node="$N_GPUS"
    trainer.nnodes="$NNODES"
    trainer.save_freq="$SAVE_FREQ"
    trainer.test_freq="$TEST_FREQ"
    trainer.val_before_train=true
    trainer.project_name="$PROJECT_NAME"
    trainer.logger="$LOGGER"
)
