"""``infopo-verl prepare tau2`` in a real subprocess, counts checked against the installed package's split files
(read here with the standard library, not through the plugin)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd


def split_files() -> dict[str, dict[str, list[str]]]:
    package = Path(importlib.util.find_spec("tau2").origin).parent
    domains = package / "data" / "tau2" / "domains"
    return {domain: json.loads((domains / domain / "split_tasks.json").read_text())
            for domain in ("retail", "airline", "telecom", "mock")}


def test_prepare_tau2_writes_the_split_files_tasks_and_the_paper_mix(tmp_path):
    out = tmp_path / "tau2"
    result = subprocess.run(
        [sys.executable, "-m", "infopo_verl.cli", "prepare", "tau2", "--domains", "retail,airline,telecom,mock",
         "--out", str(out)],
        capture_output=True, text=True, check=True,
    )
    splits = split_files()
    mixes = {"train": [], "test": []}
    for domain in ("retail", "airline", "telecom"):
        for split in ("train", "test"):
            rows = pd.read_parquet(out / domain / f"{split}.parquet")
            assert [info["infopo"]["task_id"] for info in rows["extra_info"]] == splits[domain][split]
            mixes[split] += splits[domain][split]
        counts = ", ".join(f"{split} {len(splits[domain][split])}" for split in ("train", "test"))
        assert f"tau2/{domain}: {counts}" in result.stdout
    for split, expected in mixes.items():
        rows = pd.read_parquet(out / f"{split}.parquet")
        assert [info["infopo"]["task_id"] for info in rows["extra_info"]] == expected
        assert set(rows["data_source"]) == {"tau2_retail", "tau2_airline", "tau2_telecom"}  # mock never in a mix
    mock = pd.read_parquet(out / "mock" / "base.parquet")
    assert [info["infopo"]["task_id"] for info in mock["extra_info"]] == splits["mock"]["base"]
    assert "tau2/mock: base 9" in result.stdout
    # What a row carries: the policy under our instructions, tau2's greeting, the tools as JSON text.
    row = pd.read_parquet(out / "airline" / "test.parquet").iloc[0]
    assert [message["role"] for message in row["prompt"]] == ["system", "assistant"]
    assert "<policy>" in row["prompt"][0]["content"] and row["agent_name"] == "infopo_user"
    tools = {tool["function"]["name"] for tool in json.loads(row["extra_info"]["infopo"]["tools"])}
    assert {"book_reservation", "transfer_to_human_agents", "done"} <= tools


def test_prepare_tau2_measures_prompts_with_the_policys_tokenizer(tmp_path):
    from testkit.tiny import tiny_tokenizer_path
    from transformers import AutoTokenizer

    from infopo_verl.data.tau2 import prompt_tokens, tau2_rows

    path = tiny_tokenizer_path(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "infopo_verl.cli", "prepare", "tau2", "--domains", "mock", "--out", str(tmp_path / "o"),
         "--tokenizer", path], capture_output=True, text=True, check=True,
    )
    rows = tau2_rows("mock", "base")
    tokenizer = AutoTokenizer.from_pretrained(path)
    rendered = tokenizer.apply_chat_template(list(rows[0]["prompt"]), tools=json.loads(
        rows[0]["extra_info"]["infopo"]["tools"]), tokenize=False)
    assert '"create_task"' in rendered  # the template renders the tools, so they count
    longest = prompt_tokens(rows, tokenizer)
    assert longest > len(tokenizer.encode(rows[0]["prompt"][0]["content"]))
    assert f"longest prompt: {longest} tokens" in result.stdout and "fits in data.max_prompt_length=8192" in result.stdout


def test_prepare_tau2_rejects_an_unknown_domain(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "infopo_verl.cli", "prepare", "tau2", "--domains", "retail,banking", "--out",
         str(tmp_path)], capture_output=True, text=True,
    )
    assert result.returncode == 2 and "unknown banking" in result.stderr
