"""The ledger (spend shared by processes), prices, and the budget check in the LLM client's request path."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from synth.config import RunConfig, load_config
from synth.core.budget import BudgetConfig, BudgetReached, Ledger, Spent
from synth.core.cost import Price
from synth.core.errors import ConfigError
from synth.core.llm import LLM, LLMConfig
from synth.core.llm_cache import ResponseCache
from synth.core.units import Tally
from synth.core.usage import UsageMeter
from tests.fake_openai import FakeOpenAI

USER = [{"role": "user", "content": "hi"}]
PRICES = {"fake": Price(input=2.0, output=8.0)}


def ledger(tmp_path, budget=None, prices=None, start=Spent()) -> Ledger:
    return Ledger.open(tmp_path / "ledger.bin", budget and BudgetConfig(**budget), prices, start=start)


def test_charges_add_up_across_handles_and_survive_reopening(tmp_path):
    first, second = ledger(tmp_path, prices=PRICES), ledger(tmp_path, prices=PRICES)
    assert first.charge("fake", 1000, 500) == pytest.approx((1000 * 2 + 500 * 8) / 1e6)
    second.charge("fake", 10, 0)
    assert first.spent() == second.spent() == Spent(1510, pytest.approx(0.006 + 20 / 1e6))
    first.close(), second.close()
    again = Ledger.open(tmp_path / "ledger.bin", start=Spent(99, 9.0))  # exists: `start` is not applied
    assert again.spent().tokens == 1510


def test_processes_charging_at_once_lose_no_charge(tmp_path):
    """Rollout workers are processes: each charge is a locked read-modify-write of the one file."""
    ledger(tmp_path).close()
    script = textwrap.dedent(f"""
        from synth.core.budget import Ledger
        ledger = Ledger({str(tmp_path / 'ledger.bin')!r})
        for _ in range(2000):
            ledger.charge("m", 1, 2)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert ledger(tmp_path).spent().tokens == 3 * 2000 * 3


def test_check_raises_once_a_limit_is_reached_and_names_it(tmp_path):
    book = ledger(tmp_path, {"tokens": 100, "cost": 1.0}, PRICES)
    book.check()
    book.charge("fake", 60, 39)
    book.check()  # 99 < 100
    book.charge("fake", 1, 0)
    with pytest.raises(BudgetReached) as stop:
        book.check()
    assert stop.value.which == "tokens" and stop.value.limit == 100 and stop.value.spent.tokens == 100
    assert "llm.budget.tokens" in str(stop.value)


def test_a_cost_budget_stops_on_cost(tmp_path):
    book = ledger(tmp_path, {"cost": 0.01}, PRICES)
    book.charge("fake", 0, 1250)  # 1250 * 8 / 1e6 = 0.01
    with pytest.raises(BudgetReached) as stop:
        book.check()
    assert stop.value.which == "cost"


def test_budget_reached_is_no_exception_so_no_handler_can_turn_it_into_data(tmp_path):
    """`except Exception` (tool errors, parse fallbacks) must not swallow it: a unit that meets it is abandoned."""
    assert not issubclass(BudgetReached, Exception)
    with pytest.raises(BudgetReached):
        try:
            raise BudgetReached("tokens", 1, Spent(2))
        except Exception:  # noqa: BLE001 - the point of the test
            pytest.fail("caught as an Exception")


def test_a_file_that_is_no_ledger_is_refused(tmp_path):
    (tmp_path / "ledger.bin").write_bytes(b"x" * 24)
    with pytest.raises(ValueError, match="not a synth ledger"):
        Ledger(tmp_path / "ledger.bin")


async def test_no_request_is_sent_once_the_budget_is_reached(tmp_path):
    book = ledger(tmp_path, {"tokens": 1}, PRICES)
    started = []

    async def start_endpoint() -> str:
        started.append(1)
        return "http://127.0.0.1:9/v1"

    async with FakeOpenAI() as fake:
        llm = LLM(LLMConfig(model="fake"), base_url=fake.base_url, meter=UsageMeter(), ledger=book)
        await llm.chat(USER)  # 0 spent: sent
        with pytest.raises(BudgetReached):
            await llm.chat(USER, seed=2)
        await llm.aclose()
        lazy = LLM(LLMConfig(model="fake"), meter=UsageMeter(), ledger=book, start_endpoint=start_endpoint)
        with pytest.raises(BudgetReached):
            await lazy.chat(USER)
        await lazy.aclose()
    assert len(fake.requests) == 1
    assert started == []  # the embedded model is not even started for a request that will not be sent


async def test_cache_hits_are_free_and_answer_past_the_budget(tmp_path):
    book = ledger(tmp_path, {"tokens": 1}, PRICES)
    async with FakeOpenAI() as fake:
        meter = UsageMeter()
        llm = LLM(LLMConfig(model="fake"), base_url=fake.base_url, meter=meter, cache=ResponseCache(tmp_path / "c"),
                  ledger=book)
        first = await llm.chat(USER)
        spent = book.spent()
        again = await llm.chat(USER)  # over budget, but the cache answers
        await llm.aclose()
    assert again.cached and again.message == first.message and book.spent() == spent
    usage = meter.total()
    assert (usage.requests, usage.cached) == (1, 1)
    tokens = first.prompt_tokens + first.completion_tokens
    assert usage.cached_tokens == tokens and usage.cost == pytest.approx(usage.cached_cost)
    assert usage.cost > 0 and usage.cost == pytest.approx((first.prompt_tokens * 2 + first.completion_tokens * 8) / 1e6)


async def test_a_price_table_without_the_model_fails_before_any_request(tmp_path):
    book = ledger(tmp_path, prices={"other-model": Price(input=1, output=1)})
    with pytest.raises(ConfigError, match="no entry for model 'fake'.*other-model"):
        LLM(LLMConfig(model="fake"), base_url="http://127.0.0.1:9/v1", ledger=book)


def test_a_cost_budget_needs_prices():
    with pytest.raises(ConfigError, match="budget.cost needs llm.prices"):
        load_config(None, {"llm": {"budget": {"cost": 5}}})
    assert load_config(None, {"llm": {"budget": {"cost": 5}, "prices": {"smollm2": {"input": 1, "output": 2}}}})


def test_prices_and_budget_are_operational_not_in_the_config_hash():
    base = RunConfig().content_hash()
    priced = RunConfig.model_validate({"llm": {"prices": {"m": {"input": 1, "output": 2}}, "budget": {"tokens": 10}}})
    assert priced.content_hash() == base
    assert RunConfig.model_validate({"llm": {"temperature": 0.1}}).content_hash() != base


def test_the_progress_line_counts_kept_dropped_failed_and_the_stage_spend(tmp_path):
    book = ledger(tmp_path, prices=PRICES)
    book.charge("fake", 5000, 0)  # before the stage: not its spend
    tally = Tally(book)
    for ok, kept in ((True, True), (True, False), (True, False), (False, None)):
        tally.count(ok, kept)
    book.charge("fake", 12000, 1000)
    assert tally.line() == "kept 1 · dropped 2 (67%) · failed 1 (25%) · 13.0k tokens · cost 0.0320"
    unpriced = Tally(Ledger(tmp_path / "ledger.bin"))
    unpriced.count(True)
    assert unpriced.line() == "0 tokens"  # no prices: no cost shown, no kept/dropped outside the judge
