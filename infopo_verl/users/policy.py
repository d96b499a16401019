"""The ``policy`` user simulator: the rollout's own inference servers play the user (no external API).

Departure from the paper, which uses GPT-4o-mini as the training user: this backend lets a run go without any
hosted model. The simulator chat (simulator system prompt with the hidden facts, then the dialogue seen from the
user's side) is rendered with the policy's chat template and sent to verl's server manager like any agent turn.

The sampled tokens are only decoded to text. They never enter the training batch: the agent loop re-renders the
user's text as feedback in the agent's own context, with response_mask 0, like any other user message.

Every attempt uses a fresh request id, so a retry never lands on a sticky session of a failed request. The
servers schedule their own load, so this backend has no semaphore of its own (``max_concurrency`` applies to
the ``openai`` backend).
"""

from __future__ import annotations

import asyncio
import reprlib
import uuid
from typing import Any

from verl.utils.tokenizer import normalize_token_ids

from infopo_verl.config import UserSimulatorConfig
from infopo_verl.users.base import ChatMessage, UserSimulator
from infopo_verl.users.retry import RetryableError, reply_with_retries

__all__ = ["PolicyUser"]

# Server errors can quote the whole prompt: keep a failure reason to one readable line.
_SHORT = reprlib.Repr()
_SHORT.maxstring = 160


class PolicyUser(UserSimulator):
    """Replies sampled from the policy's inference servers through ``server_manager.generate``.

    ``server_manager`` is the agent loop's ``LLMServerClient`` (anything with ``async generate(request_id, *,
    prompt_ids, sampling_params)`` returning verl's ``TokenOutput``); ``tokenizer`` is the policy's tokenizer;
    ``chat_template_kwargs`` are passed to ``apply_chat_template`` (e.g. ``{"enable_thinking": False}``).
    """

    name = "policy"

    def __init__(
        self,
        server_manager: Any,
        tokenizer: Any,
        config: UserSimulatorConfig,
        *,
        chat_template_kwargs: dict[str, Any] | None = None,
    ):
        self.server_manager = server_manager
        self.tokenizer = tokenizer
        self.config = config
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    def _render(self, messages: list[ChatMessage]) -> list[int]:
        # transformers 5 returns a BatchEncoding here, 4 a list: verl's helper accepts both.
        return normalize_token_ids(
            self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, **self.chat_template_kwargs
            )
        )

    async def reply(self, messages: list[ChatMessage]) -> str:
        loop = asyncio.get_running_loop()
        # Tokenising a long chat is CPU work: off the event loop, as verl's agent loops do.
        prompt_ids = await loop.run_in_executor(None, self._render, messages)

        async def attempt() -> str:
            try:
                output = await self.server_manager.generate(
                    request_id=uuid.uuid4().hex,
                    prompt_ids=prompt_ids,
                    # A fresh dict per call: the vLLM server pops keys out of it.
                    sampling_params={
                        "temperature": self.config.temperature,
                        "max_tokens": self.config.max_tokens,
                        "top_p": 1.0,
                        "top_k": -1,
                        "repetition_penalty": 1.0,
                        "logprobs": False,  # the user's tokens are never trained on
                    },
                )
            except Exception as error:  # a server error of any kind is one failed attempt
                detail = _SHORT.repr(str(error))
                raise RetryableError(f"server_manager.generate raised {type(error).__name__}: {detail}") from None
            if getattr(output, "stop_reason", None) == "aborted":
                raise RetryableError("generation was aborted")
            token_ids = list(getattr(output, "token_ids", None) or [])
            text = await loop.run_in_executor(
                None, lambda: self.tokenizer.decode(token_ids, skip_special_tokens=True)
            )
            if not text.strip():
                raise RetryableError("empty reply")
            return text.strip()

        return await reply_with_retries(attempt, backend=self.name, config=self.config)
