"""`python -m synth.core.llama_server ARGS`: llama-cpp-python's server with chat templates that do not HTML-escape.

llama-cpp-python renders the `chatml-function-calling` template in a jinja2 environment built with
`select_autoescape(["html", "xml"])`, which autoescapes templates made from strings: every `"`, `'`,
`<`, `>` and `&` of a message reached the model as `&#34;`, `&#39;`, ... (measured: SmolLM2 then
copies `&#34;` into the code and JSON it writes). Prompts are text, not HTML: render them verbatim.
It also registers the `synth-tools` chat format (synth/core/tool_chat.py).
"""

from __future__ import annotations

import runpy
import sys

import jinja2.sandbox
import llama_cpp.llama_chat_format as chat_format

from synth.core import tool_chat


class _VerbatimEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    def __init__(self, *args, **kwargs):
        kwargs["autoescape"] = False
        super().__init__(*args, **kwargs)


def main() -> None:
    chat_format.ImmutableSandboxedEnvironment = _VerbatimEnvironment  # looked up when a handler renders
    sys.argv = tool_chat.install(sys.argv)  # the `synth-tools` chat format (the model's own template)
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
