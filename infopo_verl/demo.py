"""``infopo-verl demo``: the README's main job. Real dialogues, on a CPU, through verl's own classes.

Dialogues of the built-in clarify task (scripted user, no API key) are rolled out by the ``infopo_user`` loop,
scored by the ``infopo`` reward manager in a Ray reward worker and turned into advantages by the ``infopo``
estimator through verl's ``compute_advantage`` (see :mod:`infopo_verl.local.pipeline`). The policy is a tiny
model trained on the spot and cached (about a minute the first time), or any causal LM given with ``--model``
(a local path or a hub id; the machine then needs the network). For each dialogue the demo prints who said
what, the information gain r_t of every turn and the advantage its tokens received.
"""

from __future__ import annotations

import argparse

DEFAULT_OVERRIDES = (
    # Small enough for a CPU, large enough for a few questions and an answer per dialogue.
    "data.max_prompt_length=512",
    "data.max_response_length=384",
    "actor_rollout_ref.rollout.prompt_length=512",
    "actor_rollout_ref.rollout.response_length=384",
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=6",
    "algorithm.infopo.max_tokens_per_turn=48",
)


def run_demo(args: argparse.Namespace) -> int:
    from infopo_verl.credit import credit_view, format_dialogue, format_ranked
    from infopo_verl.envs.clarify import generate_rows
    from infopo_verl.local.pipeline import run_dialogues
    from infopo_verl.local.tiny import trained_model

    model_path = args.model or str(trained_model(cache_dir=args.cache_dir))
    overrides = [*DEFAULT_OVERRIDES, f"actor_rollout_ref.rollout.n={args.rollouts}", *args.overrides]
    rows = generate_rows(args.prompts, seed=args.seed, split="test")
    print(f"rolling out {args.prompts} tasks x {args.rollouts} dialogues on the CPU with {model_path} ...")
    config, batch = run_dialogues(model_path, rows, overrides, seed=args.seed)

    dialogues = credit_view(batch, config.algorithm)
    # The same view as `infopo-verl report --dialogues`: where the credit went first, then every dialogue.
    print()
    print(format_ranked(dialogues))
    for dialogue in dialogues:
        print()
        print(format_dialogue(dialogue))
    gains = [turn.info_gain for dialogue in dialogues for turn in dialogue.turns if turn.info_gain is not None]
    print()
    print(f"{len(gains)} turns measured; mean r_t = {sum(gains) / max(len(gains), 1):+.4f}")
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="roll out real dialogues on the CPU and print the per-turn credit")
    parser.add_argument("--model", default=None, help="causal LM path or hub id (default: the tiny trained model)")
    parser.add_argument("--prompts", type=int, default=2, help="number of clarify tasks (default 2)")
    parser.add_argument("--rollouts", type=int, default=3, help="dialogues per task, rollout.n (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="task and sampling seed (default 0)")
    parser.add_argument("--cache-dir", default=".cache/infopo-tiny", help="where the tiny model is cached")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. algorithm.infopo.beta=0.3")
    parser.set_defaults(func=run_demo)
