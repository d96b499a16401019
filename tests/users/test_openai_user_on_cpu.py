"""OpenAIUser against a real OpenAI-compatible HTTP server on loopback (the only fake is the model behind it)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from testkit.openai_server import FakeOpenAIServer

from infopo_verl.config import ConfigError, UserSimulatorConfig
from infopo_verl.users import retry
from infopo_verl.users.base import SimulatorFailure
from infopo_verl.users.openai_chat import OpenAIUser

KEY_ENV = "INFOPO_TEST_USER_KEY"
SECRET = "sk-test-DO-NOT-LOG-4f9a1c"
CHAT = [
    {"role": "system", "content": "You are a traveller who wants to fly to Lisbon on Monday."},
    {"role": "user", "content": "Where would you like to go?"},
]


@pytest.fixture
def server():
    with FakeOpenAIServer(lambda request: "Lisbon, on Monday please.") as fake:
        yield fake


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def make_user(server: FakeOpenAIServer, **overrides) -> OpenAIUser:
    values = dict(
        backend="openai", base_url=server.base_url, model="sim-model", api_key_env=KEY_ENV,
        temperature=0.0, max_tokens=64, timeout_s=5.0, max_retries=2, backoff_s=0.0, max_concurrency=4,
    )
    values.update(overrides)
    return OpenAIUser(UserSimulatorConfig(**values))


async def test_reply_sends_model_sampling_settings_and_key(server):
    user = make_user(server, temperature=0.7, max_tokens=33)
    assert await user.reply(CHAT) == "Lisbon, on Monday please."
    (request,) = server.requests
    assert request["model"] == "sim-model"
    assert request["temperature"] == 0.7
    assert request["max_tokens"] == 33
    assert request["messages"] == CHAT
    assert server.headers[0]["authorization"] == f"Bearer {SECRET}"
    await user.aclose()


async def test_retries_then_succeeds(server):
    server.script(["http500", "malformed_json", "ok"])
    user = make_user(server, max_retries=2)
    assert await user.reply(CHAT) == "Lisbon, on Monday please."
    assert len(server.requests) == 3


async def test_hang_times_out_with_the_timeout_in_the_reason(server):
    server.mode = "hang"
    user = make_user(server, timeout_s=0.3, max_retries=1)
    with pytest.raises(SimulatorFailure) as failure:
        await user.reply(CHAT)
    assert failure.value.reason == "openai user simulator: timed out after 0.3s (2 attempts)"
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "mode, reason",
    [
        ("http500", "HTTP 500"),
        ("malformed_json", "response body is not a valid chat completion (malformed JSON)"),
        ("no_choices", "response has no choices"),
        ("empty_content", "response has an empty reply"),
    ],
)
async def test_failing_responses_are_retried_then_fail_never_inventing_a_reply(server, mode, reason):
    server.mode = mode
    user = make_user(server, max_retries=3)
    with pytest.raises(SimulatorFailure) as failure:
        await user.reply(CHAT)
    assert failure.value.reason == f"openai user simulator: {reason} (4 attempts)"
    assert len(server.requests) == 4


async def test_rejected_key_is_not_retried_and_names_the_config_keys(server):
    server.mode = "http401"
    user = make_user(server, max_retries=3)
    with pytest.raises(SimulatorFailure) as failure:
        await user.reply(CHAT)
    assert "HTTP 401" in failure.value.reason
    assert "algorithm.infopo.user.api_key_env" in failure.value.reason
    assert len(server.requests) == 1


async def test_backoff_doubles_from_backoff_s(server, monkeypatch):
    delays = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay, *args, **kwargs):
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(retry.asyncio, "sleep", recording_sleep)
    server.mode = "http500"
    user = make_user(server, max_retries=3, backoff_s=0.5)
    with pytest.raises(SimulatorFailure):
        await user.reply(CHAT)
    assert delays == [0.5, 1.0, 2.0]


async def test_key_never_in_reasons_exceptions_or_logs(server, caplog):
    caplog.set_level(logging.DEBUG)  # includes the openai and httpx loggers' debug output
    failures = []
    for modes, timeout_s in ((["http500"] * 2, 5.0), (["hang"] * 2, 0.3), (["malformed_json", "no_choices"], 5.0),
                             (["http401"], 5.0)):
        server.script(modes)
        user = make_user(server, max_retries=1, timeout_s=timeout_s)
        with pytest.raises(SimulatorFailure) as failure:
            await user.reply(CHAT)
        failures.append(failure.value)
    assert all(h["authorization"] == f"Bearer {SECRET}" for h in server.headers)  # the key was sent ...
    for failure in failures:  # ... and appears nowhere else, not even in a chained exception
        assert SECRET not in failure.reason
        error = failure
        while error is not None:
            assert SECRET not in str(error) and SECRET not in repr(error)
            error = error.__cause__ or error.__context__
    assert "attempt 1/2 failed" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in repr(make_user(server))


async def test_in_flight_requests_never_exceed_max_concurrency():
    max_concurrency = 4
    # Each request waits until max_concurrency requests are inside the server together: the bound is reached
    # (so the test is not vacuous), and an unbounded client would push max_in_flight past it. The barrier's
    # timeout only turns a broken bound into a failed request instead of a stuck test.
    barrier = threading.Barrier(max_concurrency, timeout=30)

    def responder(request):
        barrier.wait()
        return request["messages"][-1]["content"]

    with FakeOpenAIServer(responder) as server:
        user = make_user(server, max_concurrency=max_concurrency, max_retries=0)
        questions = [f"question {i}" for i in range(4 * max_concurrency)]
        replies = await asyncio.gather(*(user.reply([{"role": "user", "content": q}]) for q in questions))
        assert replies == questions
        assert server.max_in_flight == max_concurrency


def test_one_instance_serves_several_event_loops(server):
    # The factory shares one instance per process; tests and tools may drive it from successive loops.
    user = make_user(server)
    assert asyncio.run(user.reply(CHAT)) == "Lisbon, on Monday please."
    assert asyncio.run(user.reply(CHAT)) == "Lisbon, on Monday please."


def test_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ConfigError) as error:
        OpenAIUser(UserSimulatorConfig(backend="openai", api_key_env=KEY_ENV))
    assert KEY_ENV in str(error.value)
    assert "algorithm.infopo.user.api_key_env" in str(error.value)


def test_empty_key_variable_is_refused(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "  ")
    with pytest.raises(ConfigError, match=KEY_ENV):
        OpenAIUser(UserSimulatorConfig(backend="openai", api_key_env=KEY_ENV))
