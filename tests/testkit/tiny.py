"""Tiny local models for tests: built from code by :mod:`infopo_verl.local.tiny`, no hub access.

- :func:`tiny_tokenizer_path` / :func:`tiny_model_path`: fresh, untrained, built in a test's ``tmp_path`` (seconds).
- :func:`trained_model_path`: the tiny model trained on synthetic clarify dialogues, cached under the repository's
  ``.cache/infopo-tiny`` (git-ignored): the first call in a fresh checkout trains it (a minute or two on CPU),
  later calls return at once.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from infopo_verl.local.tiny import build_model, build_tokenizer, trained_model

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache" / "infopo-tiny"


def tiny_tokenizer_path(tmp_dir: str | os.PathLike) -> str:
    """Build the tiny tokenizer into ``<tmp_dir>/tiny-tokenizer`` and return that directory."""
    path = Path(tmp_dir) / "tiny-tokenizer"
    build_tokenizer(path)
    return str(path)


def tiny_model_path(tmp_dir: str | os.PathLike, seed: int = 0) -> str:
    """Build an untrained tiny ``Qwen2ForCausalLM`` with its tokenizer into ``<tmp_dir>/tiny-model``; return it."""
    path = Path(tmp_dir) / "tiny-model"
    build_model(path, build_tokenizer(path), seed=seed)
    return str(path)


@functools.lru_cache(maxsize=None)
def trained_model_path() -> str:
    """The cached trained tiny model's directory (trains it on first use in this checkout)."""
    return trained_model(CACHE_DIR, seed=0)
