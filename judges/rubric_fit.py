"""Can a rubric grade at all? `grading_problems(task)` names what is wrong; the check `rubric_valid`
(judges/checks.py) drops trajectories of tasks whose rubric has any problem.

The problems the rubric step's validation recorded on the task (`Task.rubric_problems`), and the
floor under any rubric, also one written before that step existed: at least one essential criterion (else nothing
can fail the judge but the threshold) and one positive criterion (else the score is 0 whatever
happens), and no criterion empty or repeating another.
"""

from __future__ import annotations

from synth.core.records import Task


def grading_problems(task: Task) -> list[str]:
    problems = list(task.rubric_problems)  # what the rubric step's validation found (judges/rubric_rules.py)
    kinds = [c.kind for c in task.rubric]
    if "essential" not in kinds:
        problems.append("no essential criterion")
    if all(kind == "pitfall" for kind in kinds):
        problems.append("no positive criterion")
    texts = [" ".join(c.text.lower().split()) for c in task.rubric]
    if any(not t for t in texts):
        problems.append("an empty criterion")
    if len(set(texts)) < len(texts):
        problems.append("a repeated criterion")
    return problems
