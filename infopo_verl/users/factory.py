"""Pick the user simulator named by ``algorithm.infopo.user.backend`` (SPEC section 4).

``scripted`` returns None: each environment then answers with its own deterministic rules, no model involved.
``openai`` instances are shared per process and config, so their semaphore bounds every dialogue of an
agent-loop worker together (``max_concurrency`` is per worker, not per dialogue). ``policy`` instances are cheap
and tied to the caller's server manager, so each call builds one.
"""

from __future__ import annotations

import threading
from typing import Any

from infopo_verl.config import ConfigError, UserSimulatorConfig
from infopo_verl.users.base import UserSimulator

__all__ = ["build_user_simulator"]

KEY = "algorithm.infopo.user.backend"

_openai_users: dict[UserSimulatorConfig, UserSimulator] = {}
_openai_users_lock = threading.Lock()


def build_user_simulator(
    config: UserSimulatorConfig,
    *,
    server_manager: Any = None,
    tokenizer: Any = None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> UserSimulator | None:
    """The simulator for ``config``; None for ``scripted``. ``policy`` needs the agent loop's server manager
    and tokenizer (and takes its ``apply_chat_template`` kwargs, e.g. ``enable_thinking``)."""
    if config.backend == "scripted":
        return None
    if config.backend == "openai":
        # Imported here so the scripted path never needs the openai package.
        from infopo_verl.users.openai_chat import OpenAIUser

        with _openai_users_lock:
            user = _openai_users.get(config)
            if user is None:
                user = _openai_users[config] = OpenAIUser(config)
            return user
    if config.backend == "policy":
        missing = [name for name, value in (("server_manager", server_manager), ("tokenizer", tokenizer)) if value is None]
        if missing:
            raise ConfigError(
                f"{KEY}=policy lets the rollout's own inference servers play the user, but {' and '.join(missing)} "
                f"was not given; it is only available inside an agent loop. Outside one, set {KEY}=scripted or openai"
            )
        from infopo_verl.users.policy import PolicyUser

        return PolicyUser(server_manager, tokenizer, config, chat_template_kwargs=chat_template_kwargs)
    raise ConfigError(f"{KEY} must be one of scripted, openai, policy (got {config.backend!r})")
