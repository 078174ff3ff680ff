"""Is a rubric fit to grade with? `rubric_problems(task)` names what is wrong; the check `rubric_valid`
(judges/checks.py) drops trajectories of tasks whose rubric has any problem.

Interim rules until the rubric step's own validation (issue #13 part 3) replaces them: a rubric
must hold at least one essential criterion (else nothing can fail the judge but the threshold)
and one positive criterion (else the score is 0 whatever happens), and no criterion may be empty or
repeat another.
"""

from __future__ import annotations

from synth.core.records import Task


def rubric_problems(task: Task) -> list[str]:
    problems = []
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
