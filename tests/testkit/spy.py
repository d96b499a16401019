"""Wrappers around the in-process inference server (the boundary a CPU cannot cross): they record what reaches
it, or change what it answers in the ways a real engine can (a turn closed by its stop token, an aborted request).
"""

from __future__ import annotations

from verl.workers.rollout.replica import TokenOutput

from infopo_verl.local.server import LocalLLMServer


def is_scoring(sampling_params: dict) -> bool:
    """Scoring requests ask for prompt log-probs; agent turns never do."""
    return "prompt_logprobs" in sampling_params


class SpyServer:
    """Records every request on its way to the real server: ``(prompt_ids, sampling_params, token_ids)``."""

    def __init__(self, server: LocalLLMServer):
        self.server = server
        self.requests: list[tuple[list[int], dict, list[int]]] = []
        self.starts: list[tuple[str, bool]] = []
        """(request id, is a scoring request) in the order requests were sent (``requests`` is in the order they
        finished)."""

    async def answer(self, request_id, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        return await self.server.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.starts.append((request_id, is_scoring(sampling_params)))
        output = await self.answer(request_id, prompt_ids, sampling_params, **kwargs)
        self.requests.append((list(prompt_ids), dict(sampling_params), list(output.token_ids)))
        return output

    def scoring_requests(self):
        return [request for request in self.requests if is_scoring(request[1])]

    def agent_requests(self):
        return [request for request in self.requests if not is_scoring(request[1])]


class TurnClosingServer(SpyServer):
    """A model that always closes its turn: every agent generation ends with ``stop_id`` (the chat template's
    end-of-turn token), replacing its last token when it ran to ``max_tokens`` without stopping."""

    def __init__(self, server: LocalLLMServer, stop_id: int):
        super().__init__(server)
        self.stop_id = stop_id

    async def answer(self, request_id, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        output = await super().answer(request_id, prompt_ids, sampling_params, **kwargs)
        if is_scoring(sampling_params) or (output.token_ids and output.token_ids[-1] == self.stop_id):
            return output
        token_ids = [*output.token_ids[:-1], self.stop_id]
        log_probs = [*output.log_probs[:-1], 0.0] if output.log_probs else output.log_probs
        return output.model_copy(update={"token_ids": token_ids, "log_probs": log_probs})


class AbortingServer(SpyServer):
    """Answers the ``abort_at``-th agent generation of every dialogue (0-based) as an engine that gave up: no token
    and ``stop_reason`` ``aborted`` (``empty`` keeps ``stop_reason`` ``completed`` with no token)."""

    def __init__(self, server: LocalLLMServer, abort_at: int, *, empty: bool = False):
        super().__init__(server)
        self.abort_at = abort_at
        self.empty = empty
        self.turns: dict[str, int] = {}

    async def answer(self, request_id, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        if not is_scoring(sampling_params):
            turn = self.turns.get(request_id, 0)
            self.turns[request_id] = turn + 1
            if turn == self.abort_at:
                return TokenOutput(token_ids=[], log_probs=[], stop_reason="completed" if self.empty else "aborted")
        return await super().answer(request_id, prompt_ids, sampling_params, **kwargs)
