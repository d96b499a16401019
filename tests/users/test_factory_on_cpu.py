"""build_user_simulator: one backend per algorithm.infopo.user.backend, openai instances shared per process."""

from __future__ import annotations

import pytest

from infopo_verl.config import ConfigError, UserSimulatorConfig
from infopo_verl.users.factory import build_user_simulator
from infopo_verl.users.openai_chat import OpenAIUser
from infopo_verl.users.policy import PolicyUser

KEY_ENV = "INFOPO_TEST_FACTORY_KEY"


def test_scripted_has_no_simulator():
    assert build_user_simulator(UserSimulatorConfig(backend="scripted")) is None


def test_openai_is_shared_per_config(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-factory-test")
    config = UserSimulatorConfig(backend="openai", base_url="http://127.0.0.1:9/v1", api_key_env=KEY_ENV)
    user = build_user_simulator(config)
    assert isinstance(user, OpenAIUser)
    # An equal config (as every dialogue of a worker builds it) gets the same instance, hence the same semaphore.
    assert build_user_simulator(UserSimulatorConfig(**vars(config))) is user
    other = UserSimulatorConfig(**{**vars(config), "max_concurrency": 2})
    assert build_user_simulator(other) is not user


def test_policy_needs_the_agent_loop_pieces():
    config = UserSimulatorConfig(backend="policy")
    with pytest.raises(ConfigError, match=r"algorithm\.infopo\.user\.backend=policy .*server_manager and tokenizer"):
        build_user_simulator(config)
    with pytest.raises(ConfigError, match="tokenizer was not given"):
        build_user_simulator(config, server_manager=object())
    user = build_user_simulator(config, server_manager=object(), tokenizer=object())
    assert isinstance(user, PolicyUser)
