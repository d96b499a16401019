"""The ``openai`` user simulator: any OpenAI-compatible chat endpoint (a hosted API, ``vllm serve``, SGLang).

The paper trains against GPT-4o-mini as the user; this backend is that setting. It departs from a plain client call
in three ways, all so that a long rollout neither stalls nor fabricates dialogue:

- the ``openai`` client's own retries are off (``max_retries=0``); our loop (``infopo_verl.users.retry``) makes
  ``algorithm.infopo.user.max_retries`` retries with exponential backoff, so the bound is the config's, not the SDK's;
- every attempt has a hard deadline of ``timeout_s`` (the SDK's timeout is per socket operation, a server that
  trickles bytes could outlast it);
- an empty or malformed answer counts as a failed attempt: after the retries the dialogue ends with
  :class:`SimulatorFailure`, never with a reply we made up.

The key is read from the environment variable named by ``api_key_env``, once, at construction. It is handed to
the client and nowhere else: reasons, log lines and exceptions are built from our own short strings.

Concurrency: an ``asyncio.Semaphore(max_concurrency)`` bounds requests in flight. Semaphore and HTTP client belong
to one event loop, so they are made per running loop; an agent-loop worker runs one loop, so the bound holds for
the whole worker (the factory shares one instance per process and config).
"""

from __future__ import annotations

import asyncio
import json
import os
import weakref

import openai

from infopo_verl.config import ConfigError, UserSimulatorConfig
from infopo_verl.users.base import ChatMessage, SimulatorFailure, UserSimulator
from infopo_verl.users.retry import RetryableError, reply_with_retries

__all__ = ["OpenAIUser"]

KEY = "algorithm.infopo.user"

# Statuses a retry cannot fix: bad request, bad key, no access, unknown model or route, invalid parameters.
_NOT_RETRIED = {400: "bad request", 401: "key rejected", 403: "access denied", 404: "model or route not found",
                422: "request rejected"}


class OpenAIUser(UserSimulator):
    """Chat completions from an OpenAI-compatible endpoint; safe to share across concurrent dialogues."""

    name = "openai"

    def __init__(self, config: UserSimulatorConfig):
        api_key = os.environ.get(config.api_key_env, "")
        if not api_key.strip():
            raise ConfigError(
                f"{KEY}.backend=openai needs an API key in the environment variable {config.api_key_env!r} "
                f"(named by {KEY}.api_key_env), which is not set or empty in this process; export it for the "
                f"driver and every Ray worker, or point {KEY}.api_key_env at the variable that holds it (a local "
                f"`vllm serve` without --api-key accepts any non-empty value, e.g. EMPTY)"
            )
        self.config = config
        self._api_key = api_key
        # One (client, semaphore) per event loop: both are bound to the loop they first run on.
        self._per_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"OpenAIUser(model={self.config.model!r}, base_url={self.config.base_url!r})"

    def _loop_state(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        state = self._per_loop.get(loop)
        if state is None:
            client = openai.AsyncOpenAI(
                base_url=self.config.base_url,
                api_key=self._api_key,
                timeout=self.config.timeout_s,
                max_retries=0,  # our loop retries; two nested retry loops would multiply the bound
            )
            state = (client, asyncio.Semaphore(self.config.max_concurrency))
            self._per_loop[loop] = state
        return state

    async def reply(self, messages: list[ChatMessage]) -> str:
        client, semaphore = self._loop_state()

        async def attempt() -> str:
            async with semaphore:
                return await self._request(client, messages)

        return await reply_with_retries(attempt, backend=self.name, config=self.config)

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop (optional: a worker's loop lives as long as the process)."""
        state = self._per_loop.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state[0].close()

    async def _request(self, client: openai.AsyncOpenAI, messages: list[ChatMessage]) -> str:
        timeout_s = self.config.timeout_s
        try:
            completion = await asyncio.wait_for(
                client.chat.completions.create(
                    model=self.config.model,
                    messages=messages,
                    temperature=self.config.temperature,
                    max_tokens=self.config.max_tokens,
                ),
                timeout=timeout_s,
            )
        except (openai.APITimeoutError, asyncio.TimeoutError):
            raise RetryableError(f"timed out after {timeout_s:g}s") from None
        except openai.APIStatusError as error:
            status = error.status_code
            if status in _NOT_RETRIED:
                raise SimulatorFailure(
                    f"openai user simulator: HTTP {status} ({_NOT_RETRIED[status]}), not retried; check "
                    f"{KEY}.api_key_env, {KEY}.base_url and {KEY}.model (model={self.config.model!r})"
                ) from None
            raise RetryableError(f"HTTP {status}") from None
        except openai.APIConnectionError:
            raise RetryableError(f"cannot connect to {self.config.base_url or 'the default OpenAI endpoint'}") from None
        except (json.JSONDecodeError, openai.APIResponseValidationError):
            raise RetryableError("response body is not a valid chat completion (malformed JSON)") from None
        choices = getattr(completion, "choices", None)
        if not choices:
            raise RetryableError("response has no choices")
        content = getattr(getattr(choices[0], "message", None), "content", None)
        if not isinstance(content, str) or not content.strip():
            raise RetryableError("response has an empty reply")
        return content.strip()
