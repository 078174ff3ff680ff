"""The arenas the adversarial suite attacks: a warm pool of one sandbox per backend and tool-process
mode, kept for a whole test module (one event loop per module, so the pool and its tool host live
across the module's tests the way they live across a run's episodes)."""

from __future__ import annotations

import uuid

import pytest
import pytest_asyncio

from sandboxes.docker import DockerConfig
from sandboxes.local import LocalConfig
from sandboxes.pool import WarmPool
from tests.security.attacks import Arena

ARENAS = [
    pytest.param(("local", "per_episode"), id="bwrap-per_episode"),
    pytest.param(("local", "shared"), id="bwrap-shared"),
    pytest.param(("docker", "per_episode"), id="docker-per_episode", marks=pytest.mark.docker),
    pytest.param(("docker", "shared"), id="docker-shared", marks=pytest.mark.docker),
]


def sandbox_config(backend: str, request: pytest.FixtureRequest, **kw) -> LocalConfig | DockerConfig:
    if backend == "local":
        return LocalConfig(isolation="bwrap", pool_size=1, **kw)
    return DockerConfig(image=request.getfixturevalue("docker_image"), pool_size=1, **kw)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=ARENAS)
async def arena(request):
    backend, mode = request.param
    labels = {"synth.run": f"security-{uuid.uuid4().hex[:8]}"}
    async with WarmPool(sandbox_config(backend, request), size=1, labels=labels, acquire_timeout_s=120) as pool:
        yield Arena(backend, mode, pool)
