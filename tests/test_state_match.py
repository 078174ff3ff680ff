"""Whole-state comparison with the gold final state: free paths found from two replays, timestamps,
generated keys matched by content, and assertions derived from the gold diff."""

from __future__ import annotations

import time

from judges.assertions import assertion_failures
from judges.state_match import derive_assertions, free_paths_between, state_mismatches, timestamp_paths

INITIAL = {"notes": {"1": {"id": 1, "title": "Groceries"}}, "next_id": 2}
GOLD = {"notes": {"1": {"id": 1, "title": "Groceries"}, "2": {"id": 2, "title": "Trip", "tags": ["travel"]}},
        "next_id": 3}


def test_identical_states_match_and_every_difference_is_named():
    assert state_mismatches(GOLD, GOLD, []) == []
    wrong = {"notes": {"1": {"id": 1, "title": "Groceries"}, "2": {"id": 2, "title": "trip", "tags": []}},
             "next_id": 3, "extra": True}
    assert state_mismatches(wrong, GOLD, []) == [
        'notes.2.title is "trip", gold has "Trip"',
        "notes.2.tags has 0 items, gold has 1",
        "extra is not in the gold state (found: true)"]
    assert state_mismatches(INITIAL, GOLD, []) == [
        'notes.2 is missing (gold: {"id": 2, "tags": ["travel"], "title": "Trip"})', "next_id is 2, gold has 3"]
    assert state_mismatches({"n": True}, {"n": 1}, []) == ["n is true, gold has 1"]  # a bool is not a number
    assert state_mismatches({"n": 1.0}, {"n": 1}, []) == []


def test_free_paths_are_where_two_replays_differ():
    first = {"tickets": {"T1": {"id": "T1", "title": "Printer", "at": 5.0}}, "log": [{"id": "T1"}], "n": 1}
    second = {"tickets": {"T9": {"id": "T9", "title": "Printer", "at": 6.0}}, "log": [{"id": "T9"}], "n": 1}
    free = free_paths_between(first, second)
    assert free == ["log.0.id", "tickets.*.at", "tickets.*.id", "tickets.{key}"]
    # A third run with yet other ids and times matches the gold state; a wrong title does not.
    third = {"tickets": {"T4": {"id": "T4", "title": "Printer", "at": 7.0}}, "log": [{"id": "T4"}], "n": 1}
    assert state_mismatches(third, first, free) == []
    typo = {"tickets": {"T4": {"id": "T4", "title": "Printr", "at": 7.0}}, "log": [{"id": "T4"}], "n": 1}
    assert state_mismatches(typo, first, free) == [
        'tickets holds no record matching the gold record {"at": 5.0, "id": "T1", "title": "Printer"}',
        'tickets holds a record the gold state does not: {"at": 7.0, "id": "T4", "title": "Printr"}']
    assert state_mismatches({**third, "n": 2}, first, free) == ["n is 2, gold has 1"]  # counters are not free
    assert free_paths_between({"a": [1, 2]}, {"a": [1]}) == ["a"]  # not even the same length: all of it


def test_changed_values_that_read_as_now_are_free():
    now = time.time()
    final = {"notes": {"1": {"title": "x", "created": "2020-01-01T00:00:00"}, "2": {"title": "y", "created":
             time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)), "ms": int(now * 1000), "size": 12}}}
    initial = {"notes": {"1": {"title": "x", "created": "2020-01-01T00:00:00"}}}
    assert timestamp_paths(initial, final, [], now) == ["notes.2.created", "notes.2.ms"]
    assert timestamp_paths(final, final, [], now) == []  # unchanged values are the task's data, not clocks


def test_assertions_derived_from_the_gold_diff_fail_before_and_hold_after():
    derived = derive_assertions(INITIAL, GOLD, [])
    assert [(a.path, a.op) for a in derived] == [("notes.2", "equals"), ("next_id", "equals")]
    assert assertion_failures(GOLD, derived) == []
    assert len(assertion_failures(INITIAL, derived)) == 2
    removed = derive_assertions(GOLD, INITIAL, [])
    assert [(a.path, a.op) for a in removed] == [("notes.2", "absent"), ("next_id", "equals")]
    # Free values are left out: the record is pinned field by field, without its generated id.
    partial = derive_assertions(INITIAL, GOLD, ["notes.2.id"])
    assert [(a.path, a.op) for a in partial] == [("notes.2", "exists"), ("notes.2.title", "equals"),
                                                  ("notes.2.tags", "equals"), ("next_id", "equals")]
    # Records under generated keys are left to the whole-state match.
    assert derive_assertions({"t": {}}, {"t": {"X1": {"a": 1}}}, ["t.{key}"]) == []
