"""What the container backends (docker, k8s) share: identity, labels, the workspace path rule."""

from __future__ import annotations

import posixpath
import uuid

from synth.errors import SandboxError

WORKSPACE = "/workspace"


class ContainerIdentity:
    """Name and labels fixed before creation, so stop() can remove a half-made container or Pod."""

    def __init__(self, labels: dict[str, str]):
        self.id = uuid.uuid4().hex[:12]
        self.name = f"synth-{self.id}"
        self.workspace = WORKSPACE
        self.labels = {"synth.run": "adhoc", "synth.episode": self.id, **labels, "synth.managed": "1"}


def workspace_path(path: str) -> str:
    """`path` resolved under the workspace; anything that escapes it is refused."""
    full = posixpath.normpath(posixpath.join(WORKSPACE, path))  # an absolute path replaces the join
    if full != WORKSPACE and not full.startswith(WORKSPACE + "/"):
        raise SandboxError(f"path {path!r} resolves to {full!r}, outside the workspace {WORKSPACE}")
    return full
