"""The error model, in one place.

A bad sample is data, not a crash: the pipeline's error boundary records these on the unit of
work (errors.jsonl) and goes on. Anything else that escapes a stage is a bug and is raised.
"""


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
    """A tool server failed in a way that is not a normal tool error result."""


RECORDED_ERRORS = (ProviderError, SandboxError, ToolError)


class Rejected(SynthError):
    """A generated item failed validation and was dropped. Recorded with its reason, never raised."""
