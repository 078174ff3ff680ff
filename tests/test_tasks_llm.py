"""The rubric step and the seeded-world simulator on the real embedded model (llm-marked).

What a scripted endpoint cannot show: that SmolLM2's grammar-constrained reply fits the rubric
schema and its token budget (a cut reply is a parse failure), and that the simulator's answer on a
seeded world neither breaks the state nor repeats its own instructions.
"""

from __future__ import annotations

import json

import pytest
import pytest_asyncio

from judges.rubric_rules import rubric_problems
from sandboxes import provision
from sandboxes.local import LocalConfig
from synth.config import TasksConfig
from synth.core.llm import LLM, LLMConfig
from synth.core.local_llm import EmbeddedConfig, embedded_server
from synth.stages.rubrics import anchors, write_rubric
from tests.test_rubrics import AGENT, TASK
from tests.test_simulator import SPECS, WORLD
from tools.simulator import SimulatedToolset, echoes_instructions

pytestmark = [pytest.mark.llm, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm(tmp_path_factory):
    log = tmp_path_factory.mktemp("llm") / "server.log"
    async with embedded_server(EmbeddedConfig(), log) as url:
        async with LLM(LLMConfig(model="smollm2", max_tokens=512, temperature=0.4, max_retries=1),
                       base_url=url) as client:
            yield client


async def test_the_real_model_writes_a_rubric_of_the_difficultys_size_weighted_by_the_kind_table(llm):
    cfg = TasksConfig()  # defaults: easy 7 items, weights essential 5 / important 3 / optional 1 / pitfall 5
    task = await write_rubric(llm, cfg, AGENT, SPECS, TASK, seed=0, max_tokens=512)
    weights = cfg.rubric_weights.model_dump()
    assert len(task.rubric) == cfg.items_for("easy") == 7, "the reply fit the schema and the budget"
    assert [c.weight for c in task.rubric] == [weights[c.kind] for c in task.rubric]
    assert task.reference, "a task without gold actions gets the sketched reference first"
    # What is recorded is exactly what the rules say of the final attempt.
    assert task.rubric_problems == rubric_problems(task.rubric, expected=7, anchors=anchors(task, SPECS),
                                                   weights=weights)


async def test_the_real_model_simulates_calls_on_a_seeded_world(llm):
    async with provision(LocalConfig(isolation="none")) as sandbox:
        runtime = SimulatedToolset(llm, SPECS, sandbox, seed=0)
        await runtime.reset(WORLD)
        missing = await runtime.call("get_booking", {"booking_id": "B-9999"})
        assert missing.is_error and "not found" in missing.text
        first, second = [await runtime.call("create_booking", {"customer_id": c, "room": "3"}) for c in ("C-7", "C-8")]
        found = await runtime.call("get_booking", {"booking_id": "B-1001"})
        for outcome in (first, second, found):
            assert not echoes_instructions(outcome.text), outcome.text
        state = await runtime.snapshot()
    assert json.loads(json.dumps(state)) == state
    # A booking the model created sits under an id the harness handed out (B-1003, then B-1004).
    assert set(state.get("bookings", {})) - set(WORLD["bookings"]) <= {"B-1003", "B-1004"}, state
