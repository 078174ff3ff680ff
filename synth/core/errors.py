"""The error model, in one place.

A bad sample is data, not a crash. What escapes a unit of work (a toolset to evolve, an episode, a
trajectory to judge) goes through `boundary()`: an expected failure becomes a `Failure`, which the
unit runner records in errors.jsonl against the unit (the unit is redone on the next run), and the
run goes on; anything else is a bug and is raised. Bad input (config, files) is a `ConfigError`
raised before any work, naming the field and the fix.

    SynthError
    +-- ConfigError        bad config or input file: fail fast, before any work
    +-- ProviderError      the LLM endpoint failed after retries              (recorded)
    |   +-- ParseError     the LLM answered, but not with what was asked      (recorded, raw kept)
    +-- SandboxError       a sandbox could not start, crashed, timed out      (recorded)
    +-- ToolError          a tool *server* failed: the episode fails           (recorded)
    |   +-- HostTimeout    our tool host did not answer a request in time
    +-- WorkerError        a rollout worker process failed (not one episode)
    +-- Rejected           a generated item failed validation: recorded with its reason, never raised
    TimeoutError           a unit ran out of time (an episode's limit)        (recorded)

A tool's *own* error is not an exception here: a generated module raises `ToolFailure`
(tools/server/toolset.py, inside the sandbox), a simulated tool or a bad call gets an error
result, and either way the model sees "Error: ..." as the tool's answer (tools/runtime.py
`tool_error`) and the episode goes on. `ToolError` is for the server itself failing (its process
died, it stopped answering): then the episode cannot go on and is recorded as failed.
"""

from __future__ import annotations

from dataclasses import dataclass


class SynthError(Exception):
    """Base of every error the pipeline expects and records."""


class ConfigError(SynthError):
    """Bad config or bad input file. Raised before any work; the message names the field and the fix."""


class ProviderError(SynthError):
    """The LLM endpoint failed after retries (HTTP status, timeout, connection, refusal)."""


class ParseError(ProviderError):
    """The LLM answered, but not with what was asked (invalid JSON, schema violation, cut off).

    `raw` keeps the unparseable reply so it can be inspected later.
    """

    def __init__(self, message: str, raw: str = ""):
        super().__init__(message)
        self.raw = raw


class SandboxError(SynthError):
    """A sandbox could not start, crashed, timed out or hit a resource limit."""


class ToolError(SynthError):
    """A tool server failed (not the tool: its process, its pipe, its protocol). It fails the episode;
    a tool's own error is an "Error: ..." result the model sees instead (see the module docstring)."""


class HostTimeout(ToolError):
    """A request to our tool host got no answer in time: the host may be stuck (a module looping at import)."""


class WorkerError(SynthError):
    """A rollout worker process failed (not one episode: the process)."""


class Rejected(SynthError):
    """A generated item failed validation and was dropped. Recorded with its reason, never raised."""


RECORDED_ERRORS = (ProviderError, SandboxError, ToolError, TimeoutError)
"""What a unit of work may fail with and still be data: recorded in errors.jsonl, redone on resume."""


@dataclass(frozen=True)
class Failure:
    """An expected failure as errors.jsonl records it (with the stage and the unit it failed)."""

    error_type: str
    message: str
    raw: str = ""

    @classmethod
    def of(cls, exc: BaseException, raw: str = "") -> Failure:
        return cls(type(exc).__name__, str(exc) or repr(exc), raw[:4000])


def boundary(exc: BaseException) -> Failure:
    """Classify what escaped a unit of work: an expected failure (RECORDED_ERRORS) becomes a Failure
    to record, with a ParseError's raw reply; anything else is a bug and is raised again."""
    if isinstance(exc, RECORDED_ERRORS):
        return Failure.of(exc, exc.raw if isinstance(exc, ParseError) else "")
    raise exc
