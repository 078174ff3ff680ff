"""Remove sandbox containers a killed run left behind (stop() never ran for them).

Every container the docker backend creates carries `synth.managed=1` and `synth.run=<run>`; the
pipeline calls `remove_leftovers(run)` at the start of a run, `synth sandboxes gc` does it by hand.
"""

from __future__ import annotations

import docker.errors

from sandboxes.docker import client, remove_container


def remove_leftovers(run: str | None = None) -> int:
    """Force-remove managed containers (of `run` only, when given); return how many were removed.

    Blocking (a few engine calls): call it from a thread in async code.
    """
    labels = ["synth.managed=1"] + ([f"synth.run={run}"] if run else [])
    removed = 0
    for container in client().api.containers(all=True, filters={"label": labels}):
        try:
            remove_container(container["Id"])
            removed += 1
        except docker.errors.APIError:
            pass  # gone meanwhile, or the engine refused: the next gc tries again
    return removed


def remove_stale_images() -> int:
    """Remove synth-sandbox images other than the current build of each variant (unless in use)."""
    from sandboxes.image.build import DEBIAN_PACKAGES, REPO, image_tag

    current = {image_tag(variant) for variant in DEBIAN_PACKAGES}
    removed = 0
    for image in client().images.list(name=REPO):
        if not current & set(image.tags):
            try:
                client().images.remove(image.id)
                removed += 1
            except docker.errors.APIError:
                pass  # a container still uses it
    return removed


def remove_k8s_leftovers(cfg, run: str | None = None) -> int:
    """Delete managed Pods (label synth.managed=1; of `run` only, when given) in cfg.namespace.

    cfg is a K8sConfig. Blocking, with its own event loop: call it from a thread in async code.
    """
    import asyncio

    from sandboxes.k8s import delete_pods

    return asyncio.run(delete_pods(cfg, run))
