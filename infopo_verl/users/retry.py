"""The one bounded retry loop every model-backed user simulator shares (``openai`` and ``policy``).

A backend supplies one attempt; an attempt that fails in a way a retry may fix raises :class:`RetryableError`
with a short reason. After ``max_retries`` retries (exponential backoff from ``backoff_s``) the loop raises
:class:`SimulatorFailure` naming the last reason and the number of attempts. A failure no retry can fix (a
rejected key) raises :class:`SimulatorFailure` straight from the attempt and ends the loop at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from infopo_verl.config import UserSimulatorConfig
from infopo_verl.users.base import SimulatorFailure

__all__ = ["RetryableError", "reply_with_retries"]

logger = logging.getLogger(__name__)


class RetryableError(Exception):
    """One attempt failed, a later one may succeed. ``reason`` is short and safe to log (no key, no reply text)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


async def reply_with_retries(
    attempt: Callable[[], Awaitable[str]], *, backend: str, config: UserSimulatorConfig
) -> str:
    """Run ``attempt`` up to ``config.max_retries + 1`` times; return the first reply or raise SimulatorFailure."""
    attempts = config.max_retries + 1
    reason = "no attempt made"
    for index in range(attempts):
        try:
            return await attempt()
        except RetryableError as error:
            reason = error.reason
        if index + 1 < attempts:
            delay = config.backoff_s * 2**index
            logger.warning(
                "%s user simulator: attempt %d/%d failed (%s); retrying in %.3gs",
                backend, index + 1, attempts, reason, delay,
            )
            # Backoff runs outside any concurrency slot, so a waiting retry does not block other dialogues.
            await asyncio.sleep(delay)
    plural = "attempt" if attempts == 1 else "attempts"
    raise SimulatorFailure(f"{backend} user simulator: {reason} ({attempts} {plural})")
