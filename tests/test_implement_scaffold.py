"""The harness's part of `synth tools implement`: scaffold (STATE_DEFAULT, exact signatures), body
extraction and static checks, and the schema-derived smoke tests run by the real selftest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tools import scaffold
from tools.server.toolset import contract_problems, load_module
from tools.smoke import plan, smoke_tests

NOTES = Path(__file__).parent / "fixtures" / "toolsets" / "notes"
TOOLS = json.loads((NOTES / "tools.json").read_text())
GOOD_MODULE = (NOTES / "impl.py").read_text()


def test_scaffold_signatures_fit_the_contract_and_state_comes_from_the_names(tmp_path):
    head = scaffold.header("notes", "notes", "notes by id", TOOLS)
    module = scaffold.assemble(head, [f"{scaffold.function_head(t)}\n    return {{}}" for t in TOOLS])
    path = tmp_path / "impl.py"
    path.write_text(module)
    assert contract_problems(load_module(str(path)), TOOLS) == []
    assert scaffold.state_default(TOOLS) == {"notes": {}, "next_id": 1}
    assert scaffold.signature(TOOLS[0]).head() == "def create_note(state, title, body, tags=None):"
    odd = {"name": "make_thing", "inputSchema": {"properties": {"class": {"type": "string"}}, "required": ["class"]}}
    assert scaffold.signature(odd).head() == "def make_thing(state, **arguments):"
    assert [scaffold.verb_class(n) for n in ("add_item", "fetch_order", "search_flights", "cancel_booking",
                                             "update_user", "convert_units")] == [
        "create", "get", "list", "delete", "update", "other"]
    assert scaffold.noun_of("list_calendar_events") == "calendar_event" and scaffold.plural("category") == "categories"


def test_extract_body_keeps_the_harness_signature_and_checks_statically():
    head = scaffold.header("notes", "notes", "", TOOLS)
    fn = scaffold.function_head(TOOLS[1])
    reply = ("Sure! Here it is:\n```python\ndef get_note(state, id):\n    \"\"\"Get it.\"\"\"\n"
             "    note = state[&#34;notes&#34;].get(str(note_id))\n    return note\n\ndef test_x():\n    pass\n```")
    body = scaffold.extract_body(reply, "get_note")
    assert body == '    note = state["notes"].get(str(note_id))\n    return note'
    assert scaffold.body_problem(head, fn, body, {"state"}) is None
    assert scaffold.body_problem(head, fn, "    x = {'a': 1", set()).startswith("SyntaxError")
    assert scaffold.body_problem(head, fn, "    return notes[note_id]", set()) == "undefined names: notes"
    assert "never returns" in scaffold.body_problem(head, fn, "    x = 1", set())
    assert scaffold.body_problem(head, fn, "    pass", set()) == "the body does nothing"
    nested = "    def inner(state):\n        return {}"  # measured: the small model nests a copy of the def
    assert "never returns" in scaffold.body_problem(head, fn, nested, set())
    assert scaffold.extract_body("no code at all", "get_note") == "    no code at all"


def _selftest(tmp_path, module: str) -> dict:
    (tmp_path / "impl.py").write_text(module)
    (tmp_path / "tests.py").write_text(smoke_tests(TOOLS))
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    out = subprocess.run([sys.executable, "-m", "tools.server.selftest", "--module", str(tmp_path / "impl.py"),
                          "--tests", str(tmp_path / "tests.py"), "--specs", str(tmp_path / "tools.json")],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_smoke_tests_pass_a_real_module_and_catch_a_reader_that_finds_nothing(tmp_path):
    names = [c["name"] for c in plan(TOOLS)]
    assert names == ["run__create_note", "run__get_note", "run__list_notes", "run__delete_note",
                     "round_trip__create_note__get_note", "delete__delete_note"]
    assert _selftest(tmp_path, GOOD_MODULE)["passed"]

    broken = GOOD_MODULE.replace("        raise ToolFailure(f\"no note with id {note_id}\")  # noqa: F821\n    return note",
                                 "        raise ToolFailure(f\"no note with id {note_id}\")  # noqa: F821\n    return {}")
    assert broken != GOOD_MODULE
    report = _selftest(tmp_path, broken)
    failed = {t["name"]: t for t in report["tests"] if not t["ok"]}
    assert not report["passed"] and set(failed) == {"test_round_trip__create_note__get_note"}
    assert "returned {}" in failed["test_round_trip__create_note__get_note"]["error"]

    # A tool that forgets to store: setup notices; the error comes from the module's own frame.
    leaky = GOOD_MODULE.replace('state["notes"][str(note["id"])] = note', 'state["notes"][str(note["id"])] = 1 / 0')
    report = _selftest(tmp_path, leaky)
    assert {t.get("function") for t in report["tests"] if not t["ok"]} == {"create_note"}


def test_a_creator_that_ignores_its_arguments_or_stores_nothing_fails(tmp_path):
    constant = GOOD_MODULE.replace('note = {"id": state["next_id"], "title": title, "body": body,',
                                   'note = {"id": state["next_id"], "title": "fixed", "body": "fixed",')
    constant = constant.replace('if any(n["title"] == title', 'if any(n["title"] == "never"')
    constant = constant.replace('"tags": sorted(set(tags or []))}', '"tags": []}')
    assert constant.count("fixed") == 2 and '"tags": []}' in constant
    report = _selftest(tmp_path, constant)
    errors = {t["name"]: t["error"] for t in report["tests"] if not t["ok"]}
    assert "whatever its arguments" in errors["test_run__create_note"]

    forgetful = GOOD_MODULE.replace('    state["notes"][str(note["id"])] = note  # JSON object keys are strings\n'
                                    '    state["next_id"] += 1\n', "")
    assert forgetful != GOOD_MODULE
    errors = {t["name"]: t["error"] for t in _selftest(tmp_path, forgetful)["tests"] if not t["ok"]}
    assert "did not change the state" in errors["test_run__create_note"]
