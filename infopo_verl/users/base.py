"""The user-simulator interface: who answers the agent (SPEC section 4).

A backend turns a chat (the simulator's own system prompt with the hidden facts, then the dialogue seen from the
user's side) into one reply. Backends never invent a reply: after their bounded retries they raise
:class:`SimulatorFailure`, and the agent loop ends that dialogue with the failure recorded.

Everything a simulator returns is untrusted text: callers treat it as data, never as code or config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

ChatMessage = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


class SimulatorFailure(RuntimeError):
    """The simulator gave no usable reply after all retries. ``reason`` is safe to log (never holds a key)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UserSimulator(ABC):
    """One backend instance may serve many dialogues concurrently; it holds no per-dialogue state."""

    name: str = "abstract"

    @abstractmethod
    async def reply(self, messages: list[ChatMessage]) -> str:
        """Return the simulator's next message for ``messages``; raise :class:`SimulatorFailure` when it cannot."""
