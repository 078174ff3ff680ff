"""Deterministic checks of the user simulator's messages: did it stay the user, say only what it knows,
give facts only when asked, not stop before anything was done, never say nothing?

tau2-bench found the user simulator behind up to 30% of failures, so these rules run twice: in the
rollout (synth/user_sim.py records their flags on `Trajectory.user_flags`, counted in the manifest:
a measure of simulator error) and in the judge (judges/checks.py `USER`: a failed one drops the
trajectory unless its flag is left out of `judge.drop_user_flags`). Both read the same functions,
here, over the messages alone, so a planted defect is caught the way a real one is.

- `user_broke_role`: a user message speaks as the assistant or as an AI ("How can I assist you
  today?", "I'm a chatbot", "As an AI, ...").
- `user_invented_fact`: a user message states an id-, email- or number-like value (3+ digits)
  that is in none of the hidden facts, the goal, the persona or what the agent said before it.
- `fact_leaked_unasked`: a user message gives a hidden fact's distinctive value (`fact_value`)
  that the agent's message before it did not ask about (no '?', or no content word in common with
  the fact). Values already in the goal or said before do not count.
- `premature_stop`: the user ended the conversation before any tool call succeeded, although the
  task needs tools (its rubric names a tool, or a tool is a write tool; see `needs_tools`).
- `empty_user_message`: the simulator said nothing (and did not stop).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from synth.core.records import Task, ToolSpec, Trajectory

BROKE_ROLE = "user_broke_role"
INVENTED_FACT = "user_invented_fact"
FACT_LEAKED = "fact_leaked_unasked"
PREMATURE_STOP = "premature_stop"
EMPTY_MESSAGE = "empty_user_message"
USER_FLAGS = (BROKE_ROLE, INVENTED_FACT, FACT_LEAKED, PREMATURE_STOP, EMPTY_MESSAGE)

_STOPWORDS = frozenset(
    "the and for you your yours are was were with that this have has had what which when where who whom "
    "how can could would should will shall may might must our ours their there then than them they its "
    "it's from into onto about please just also any all some one not but can't don't i'm i've is be".split()
)
# First word of a tool name that changes state, for tools without an MCP readOnlyHint annotation.
WRITE_VERBS = frozenset(
    "add assign book cancel change close create delete edit insert issue make modify move open order pay "
    "place post put refund remove rename reschedule reserve reset schedule send set submit transfer update "
    "upload upsert write".split()
)

# -- role ----------------------------------------------------------------------------------------

_JOBS = r"(?:manager|professor|director|coach|editor|teacher|principal|researcher|engineer|developer|startup|company)"
_ROLE_BREAK = [re.compile(p, re.IGNORECASE) for p in (
    # speaking as an AI
    r"\bas an? (?:ai|artificial intelligence)\b(?:[,.;:!]| (?:language )?model| assistant| chat ?bot| system)",
    r"\bas an? (?:large )?language model\b",
    r"\bas an? (?:chat ?bot|virtual assistant|digital assistant|ai assistant)\b",
    r"\bi(?:'m| am) (?:just |only |simply )?an? (?:ai|artificial intelligence|(?:large )?language model|chat ?bot|"
    r"virtual assistant|digital assistant|bot|computer program)\b(?! " + _JOBS + ")",
    r"\bi(?:'m| am) (?:just |only )?an? (?:helpful |friendly )?assistant\b(?! " + _JOBS + r"| to\b)",
    r"\bmy (?:training data|knowledge cut-?off)\b",
    r"\bi (?:do not|don't) have (?:personal (?:experiences|opinions|feelings)|a physical body|real-time access)\b",
    r"\bi can only (?:assist|help) with text\b",
    r"\bi (?:do not|don't) have (?:the ability to access|access to) (?:personal|real-time|your personal|the internet)",
    # speaking as the assistant: offering help instead of asking for it
    r"\bhow (?:can|may|could|might) i (?:help|assist)(?: you)?(?: today| with (?:that|this|anything|something))?\s*[?.!,]",
    r"\bhow (?:can|may) i be of (?:help|assistance|service)\b",
    r"\bwhat can i (?:do for you|help (?:you )?with)\b",
    r"\b(?:is there )?anything (?:else )?i can (?:help|assist) you with\b",
    r"\bwhat brings you here\b",
    r"\bwhat(?:'s| is) on your mind\b",
    r"\bi(?:'m| am) (?:here|ready|available) to (?:help|assist)\b",
    r"\bi(?:'m| am) glad you(?:'re| are) here\b",
    r"\b(?:i'd|i would|i'll|i will|i'm|i am) (?:be )?(?:happy|glad|delighted) to (?:help|assist)\b",
    r"\bi(?:'d| would) love to help\b",
    r"\bi(?:'m| am) (?:so |very |really |just )?(?:excited|thrilled|eager|ready) to (?:help|assist)\b",
    r"\bi(?:'m| am) (?:your|the) (?:(?:ai|virtual|digital|personal|friendly) )?(?:chat ?bot|assistant)\b(?! " + _JOBS + r"| to\b)",
    r"\bi(?:'ll| will) do my best to (?:help|assist)\b",
    r"\b(?:provide|offer) (?:you )?(?:with )?(?:any )?(?:the )?assistance you need\b",
    r"\b(?:don't|do not) hesitate to (?:ask|reach out|contact)\b",
    r"\bfeel free to (?:ask|reach out|let me know)\b",
    r"\bi can (?:help|assist) you with\b",
    r"\bi can (?:help|assist) you (?:to )?(?:create|make|book|set up|get started|manage|plan|learn|understand|schedule"
    r"|track|organi[sz]e)\b",
    r"\b(?:what|which) (?:specific |particular )?[\w-]+ (?:you are|you're) (?:interested in|looking for)\b",
    r"\b(?:unable|not able) to (?:help|assist) you\b",
    r"\byou can ask me anything\b",
)]


_HUMAN_ASSISTANT = re.compile(r"\b(?:teaching|research|administrative|executive|personal|legal|medical|dental|lab"
                              r"|shop|store|sales|nursing|physician|office) assistant\b", re.IGNORECASE)
_PERSONA_IS_ASSISTANT = re.compile(r"^\s*(?:you are |i am |i'm )?(?:an? |the )?(?:[\w-]+ ){0,3}"
                                   r"(?:assistant|chatbot|bot|ai (?:model|system)|language model)\b", re.IGNORECASE)


def persona_problems(persona: str) -> list[str]:
    """Why a task's persona cannot be played as the user (empty: it can). Small task writers describe
    the assistant instead ("A Booking Assistant who can create bookings"), and a simulator told to be
    that persona then speaks as the assistant from its first message."""
    if _PERSONA_IS_ASSISTANT.search(persona) and not _HUMAN_ASSISTANT.search(persona):
        return [f"the persona describes an assistant, not the user who comes to it: {persona[:80]!r}"]
    return []


def role_breaks(text: str) -> list[str]:
    """The phrases of `text` that speak as the assistant or as an AI (empty: it stays the user)."""
    return [m.group(0) for pattern in _ROLE_BREAK if (m := pattern.search(text))]


# -- values the user states ----------------------------------------------------------------------

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_TOKEN = re.compile(r"#?[A-Za-z0-9][A-Za-z0-9_/.:-]*[A-Za-z0-9]|#?\d")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def _normalized(text: str) -> str:
    return _THOUSANDS.sub("", text.lower())


def stated_values(text: str) -> list[str]:
    """Id-, email- and number-like values in a message: emails, tokens that mix letters and digits
    (A-1234, ORD555, 2024-05-12), and numbers of 3 or more digits ($1,200 -> 1200). Lowercase."""
    text = _normalized(text)
    values = _EMAIL.findall(text)
    rest = _EMAIL.sub(" ", text)
    for token in _TOKEN.findall(rest):
        token = token.rstrip(".:/")
        digits = sum(ch.isdigit() for ch in token)
        letters = sum(ch.isalpha() for ch in token)
        if digits and (letters or digits >= 3) and len(token) >= 3:
            values.append(token)
    return list(dict.fromkeys(values))


def invented_values(text: str, known: str) -> list[str]:
    """Values `text` states that `known` (facts, goal, persona, what the agent said) does not contain."""
    known = _normalized(known)
    return [v for v in stated_values(text) if v.lstrip("#") not in known]


# -- hidden facts --------------------------------------------------------------------------------


def fact_value(fact: str) -> str:
    """The distinctive part of a fact: after its first ':' ("Order id: A-17"), else after its last
    ' is '/' are ' ("My name is Ann Lee"), else the whole fact; outer punctuation stripped."""
    if ":" in fact:
        value = fact.split(":", 1)[1]
    else:
        parts = re.split(r"\s(?:is|are|was|=)\s", fact)
        value = parts[-1]
    return value.strip().strip(".,;!?\"'`()[] ")


def content_words(text: str) -> set[str]:
    """Lowercase words of 3+ letters minus stopwords, with a plural 's' dropped (crude, on purpose)."""
    words = re.findall(r"[a-z0-9][a-z0-9'@.-]*[a-z0-9]|[a-z0-9]", text.lower())
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if len(w) >= 3 and w not in _STOPWORDS}


def asked_about(agent_message: str, fact: str) -> bool:
    return "?" in agent_message and bool(content_words(agent_message) & content_words(fact))


def leaked_facts(facts: Iterable[str], agent_message: str, user_message: str, *, known: str = "") -> list[str]:
    """Hidden facts whose value `user_message` gives although `agent_message` did not ask for them."""
    said, known = user_message.lower(), known.lower()
    leaked = []
    for fact in facts:
        value = fact_value(fact).lower()
        if len(value) < 3 or value not in said or value in known:
            continue
        if not asked_about(agent_message, fact):
            leaked.append(fact)
    return leaked


# -- stopping ------------------------------------------------------------------------------------


def first_word(name: str) -> str:
    """The first word of a tool name: get_order, getOrder, get-order, get.order -> get."""
    return re.split(r"[_\-\s.]|(?<=[a-z0-9])(?=[A-Z])", name, maxsplit=1)[0].lower()


def is_write_name(name: str) -> bool:
    return first_word(name) in WRITE_VERBS


def is_write_tool(spec: ToolSpec) -> bool:
    """MCP's readOnlyHint when the spec has it, else whether the name starts with a write verb."""
    hint = (spec.annotations or {}).get("readOnlyHint")
    if isinstance(hint, bool):
        return not hint
    return is_write_name(spec.name)


def needs_tools(task: Task, tools: Iterable[tuple[str, bool]]) -> bool:
    """The task needs a tool call: its rubric names one of the tools, or one of them writes. `tools`:
    (name, writes) pairs."""
    rubric = " ".join(c.text for c in task.rubric).lower()
    return any(name.lower() in rubric or writes for name, writes in tools)


# -- over a whole trajectory ---------------------------------------------------------------------


def _user_turns(messages: list[dict[str, Any]]):
    """(index, text, the agent's last text before it, what the agent said before it, what the user said before it)."""
    agent_said: list[str] = []
    user_said: list[str] = []
    for i, message in enumerate(messages):
        text = str(message.get("content") or "")
        if message["role"] == "assistant" and text:
            agent_said.append(text)
        elif message["role"] == "user":
            yield i, text, agent_said[-1] if agent_said else "", list(agent_said), list(user_said)
            user_said.append(text)


def role_break_turns(messages: list[dict[str, Any]]) -> list[tuple[int, list[str]]]:
    return [(i, found) for i, text, *_ in _user_turns(messages) if (found := role_breaks(text))]


def invented_fact_turns(messages: list[dict[str, Any]], task: Task) -> list[tuple[int, list[str]]]:
    own = "\n".join([*task.user_facts, task.goal, task.persona])
    return [(i, found) for i, text, _, agent, user in _user_turns(messages)
            if (found := invented_values(text, "\n".join([own, *agent, *user])))]


def leaked_fact_turns(messages: list[dict[str, Any]], task: Task) -> list[tuple[int, list[str]]]:
    return [(i, found) for i, text, last, _, user in _user_turns(messages)
            if (found := leaked_facts(task.user_facts, last, text, known=" ".join([task.goal, *user])))]


def empty_user_turns(messages: list[dict[str, Any]]) -> list[int]:
    return [i for i, text, *_ in _user_turns(messages) if not text.strip()]


def stopped_early(trajectory: Trajectory, task: Task) -> bool:
    """`premature_stop` from the trajectory alone: write tools told by name (specs' annotations are
    not on the trajectory's function schemas)."""
    names = [t["function"]["name"] for t in trajectory.tools]
    succeeded = any(not t.is_error for t in trajectory.tool_calls) if trajectory.tool_calls else any(
        m["role"] == "tool" and not str(m.get("content") or "").lstrip().lower().startswith("error")
        for m in trajectory.messages)
    return trajectory.user_stopped and not succeeded and needs_tools(task, [(n, is_write_name(n)) for n in names])
