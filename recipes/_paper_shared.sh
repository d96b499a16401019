# shellcheck shell=bash
# Sourced by the paper-reproduction settings files (_usergym_common.sh, _tau2_common.sh), never run on its own:
# the settings every released paper run shares (SPEC section 1, "Shared" line and the columns that agree), so the
# benchmarks cannot drift apart on them. The sourcing file sets the knobs used below first: MODEL_PATH,
# TEMPERATURE, ROLLOUT_TP, GPU_MEMORY_UTILIZATION, USER_BACKEND, USER_MODEL, USER_BASE_URL, USER_API_KEY_ENV,
# N_GPUS, NNODES, SAVE_FREQ, TEST_FREQ, PROJECT_NAME, LOGGER.

# shellcheck disable=SC2034
PAPER_SHARED_OVERRIDES=(
    # 5 rollouts per prompt, PPO mini-batches of 16 prompts (verl counts mini-batches in prompts): every run.
    actor_rollout_ref.rollout.n=5
    actor_rollout_ref.actor.ppo_mini_batch_size=16
    data.filter_overlong_prompts=true
    # Agent turns of at most 1024 tokens: every run.
    algorithm.infopo.max_tokens_per_turn=1024
    actor_rollout_ref.model.path="$MODEL_PATH"
    actor_rollout_ref.model.use_remove_padding=true
    actor_rollout_ref.model.enable_gradient_checkpointing=true
    # Loss: PPO clip 0.2 with dual-clip 3.0, token-mean loss, 1 PPO epoch, entropy 0.001, no KL loss and no KL in
    # the reward, gradient clipping at 1.0.
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
    actor_rollout_ref.rollout.temperature="$TEMPERATURE"
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
