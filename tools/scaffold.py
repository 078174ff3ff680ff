"""The deterministic part of an executable toolset, written by the harness, not the LLM.

From the tool specs alone: STATE_DEFAULT (one dict collection per noun in the tool names, plus a
`next_id` counter), one signature per tool that matches its inputSchema exactly (the contract of
tools/server/toolset.contract_problems), and a docstring per function. The LLM writes only the
function bodies (tools/implement.py): a small model cannot hold a whole module together (measured:
SmolLM2-135M wrote SyntaxErrors in every whole-module round), but it can fill one short body.

Bodies are checked here before anything runs: they must compile, must not use names that are
defined nowhere, and must do something.
"""

from __future__ import annotations

import ast
import builtins
import html
import json
import keyword
import re
import textwrap
from typing import Any

from pydantic import BaseModel

# Verb classes pick the few-shot examples of a body and the smoke tests' roles (tools/smoke.py).
VERBS = {
    "create": "create add new register book schedule insert post send submit make record log place "
              "open upload reserve assign enroll issue generate start invite".split(),
    "get": "get read fetch view show lookup retrieve check describe load lookup_by find_by".split(),
    "list": "list search query browse filter find all count".split(),
    "update": "update edit set modify change rename move mark complete toggle approve reject "
              "assign_to rate reschedule pay".split(),
    "delete": "delete remove cancel close archive drop clear unregister revoke".split(),
}
INDENT = " " * 4


class Signature(BaseModel):
    """One tool's function head, as the harness writes it."""

    name: str
    verb: str  # create / get / list / update / delete / other
    noun: str  # singular, e.g. "note" for create_note
    params: list[str]  # schema properties in call order: required first
    required: list[str]
    kwargs_only: bool = False  # property names that are not identifiers: take **arguments

    def head(self) -> str:
        if self.kwargs_only:
            return f"def {self.name}(state, **arguments):"
        args = [p if p in self.required else f"{p}=None" for p in self.params]
        return f"def {self.name}({', '.join(['state', *args])}):"


def words(name: str) -> list[str]:
    return [w for w in re.split(r"[_\W]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()) if w]


def verb_class(name: str) -> str:
    first = (words(name) or [""])[0]
    return next((cls for cls, verbs in VERBS.items() if first in verbs), "other")


def singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def plural(word: str) -> str:
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"


def noun_of(name: str) -> str:
    """The thing a tool acts on: create_calendar_event -> calendar_event; get_notes -> note."""
    parts = words(name)
    rest = parts[1:] if verb_class(name) != "other" and len(parts) > 1 else parts[-1:]
    rest = [w for w in rest if w not in ("by", "id", "all", "for", "new", "details", "info")] or ["item"]
    return "_".join(rest[:-1] + [singular(rest[-1])])


def signature(tool: dict[str, Any]) -> Signature:
    schema = tool.get("inputSchema") or {}
    props = list((schema.get("properties") or {}).keys())
    required = [p for p in props if p in set(schema.get("required") or [])]
    ok = all(p.isidentifier() and not keyword.iskeyword(p) and p != "state" for p in props)
    return Signature(name=tool["name"], verb=verb_class(tool["name"]), noun=noun_of(tool["name"]),
                     params=required + [p for p in props if p not in required], required=required,
                     kwargs_only=not ok)


def state_default(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """One collection (a dict keyed by string id) per noun, and an id counter."""
    nouns = sorted({noun_of(t["name"]) for t in tools})
    return {**{plural(n): {} for n in nouns}, "next_id": 1}


def docstring(tool: dict[str, Any]) -> str:
    """The tool's description on one line: the few-shot examples have one-line docstrings, and a
    135M model copies their shape best when the target looks the same (measured on create_note at
    temperature 0.2: 6 of 8 drafts stored the new item, against 2 of 8 with a line per parameter)."""
    text = " ".join(str(tool.get("description") or tool["name"]).split())
    text = text.replace("\\", "/").replace('"""', "'''")
    return f'{INDENT}"""{text}"""'


def function_head(tool: dict[str, Any]) -> str:
    return f"{signature(tool).head()}\n{docstring(tool)}"


def header(toolset: str, domain: str, state_model: str, tools: list[dict[str, Any]]) -> str:
    note = (f'"""Toolset {toolset!r} (domain {domain!r}). State: {" ".join(state_model.split()) or "-"}\n\n'
            "Scaffolded by synth (STATE_DEFAULT, signatures, docstrings); function bodies written by an LLM.\n"
            '"""\n')
    return f"{note}\nSTATE_DEFAULT = {json.dumps(state_default(tools))}\n"


def assemble(head: str, functions: list[str]) -> str:
    return head + "".join(f"\n\n{fn.rstrip()}\n" for fn in functions)


# -- bodies from the LLM -------------------------------------------------------------------------
def extract_body(reply: str, name: str) -> str:
    """The function body in a reply: the code block's text, minus a repeated def line and docstring,
    indented one level. The harness keeps its own signature whatever the model wrote."""
    if "&#" in reply or "&quot;" in reply:  # an endpoint whose chat template HTML-escapes (llama-cpp-python)
        reply = html.unescape(reply)
    blocks = re.findall(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", reply, flags=re.S)
    code = max(blocks, key=len) if blocks else reply
    lines = code.rstrip().splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(rf"\s*def\s+{re.escape(name)}\s*\(", line)), None)
    if start is not None:
        lines = _after_def(lines, start)
    else:  # drop a repeated STATE_DEFAULT line or other top-level lines before the body
        lines = [line for line in lines if not line.startswith("STATE_DEFAULT")]
    body = textwrap.dedent("\n".join(lines)).strip("\n")
    body = _drop_docstring(body)
    return textwrap.indent(body, INDENT) if body.strip() else ""


def _after_def(lines: list[str], start: int) -> list[str]:
    """The lines of the function that starts at `start` (its def may span lines), up to its end."""
    end = start
    while end < len(lines) and not lines[end].rstrip().endswith(":"):
        end += 1
    body = lines[end + 1:]
    indent = next((len(line) - len(line.lstrip()) for line in body if line.strip()), 0)
    out = []
    for line in body:
        if line.strip() and len(line) - len(line.lstrip()) < max(indent, 1):
            break  # the function ended (a second def, a test, prose)
        out.append(line)
    return out


def _drop_docstring(body: str) -> str:
    stripped = body.lstrip()
    for quote in ('"""', "'''"):
        if stripped.startswith(quote):
            end = stripped.find(quote, 3)
            if end != -1:
                return stripped[end + 3:].lstrip("\n")
    return body


def body_problem(head: str, function_head_text: str, body: str, names: set[str]) -> str | None:
    """Why a drafted body cannot go into the module, or None. `names`: module-level names it may use."""
    if not body.strip():
        return "the reply has no function body"
    source = f"{head}\n\n{function_head_text}\n{body}\n"
    try:
        tree = ast.parse(source)
        compile(tree, "impl.py", "exec")
    except SyntaxError as e:
        line = source.splitlines()[e.lineno - 1].strip() if e.lineno and e.lineno <= len(source.splitlines()) else ""
        return f"SyntaxError: {e.msg} (line: {line})"
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef))
    statements = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if all(isinstance(s, ast.Pass) for s in statements):
        return "the body does nothing"
    if not any(isinstance(n, (ast.Return, ast.Raise)) and (n.value if isinstance(n, ast.Return) else n.exc) is not None
               for n in _own_nodes(fn)):
        return "the body never returns a value: end it with `return ...`"
    if undefined := sorted(_undefined_names(fn) - names):
        return f"undefined names: {', '.join(undefined)}"
    return None


def _undefined_names(fn: ast.FunctionDef) -> set[str]:
    """Names read in the function that it never binds (params, assignments, loops, imports...)."""
    bound = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    bound |= {a.arg for a in (fn.args.vararg, fn.args.kwarg) if a}
    loaded = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)) and node is not fn:
            bound |= {a.arg for a in node.args.args}
            if isinstance(node, ast.FunctionDef):
                bound.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound - set(dir(builtins))


def _own_nodes(fn: ast.FunctionDef):
    """The function's nodes, not those of functions or classes defined inside it (a nested def's
    `return` does not return from the tool: measured, a 135M model nests a copy of the signature)."""
    stack = list(fn.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def read_state_default(module: str) -> dict[str, Any] | None:
    """STATE_DEFAULT of a generated module, read as a literal (the host never runs generated code)."""
    try:
        tree = ast.parse(module)
    except SyntaxError:
        return None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "STATE_DEFAULT" for t in node.targets)):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None
