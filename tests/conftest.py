"""Fixtures shared across test modules."""

from __future__ import annotations

import os

import docker
import pytest


def pytest_collection_modifyitems(config, items):
    """`bigmodel` tests serve a preset of hundreds of MB to GB at a few tok/s: opt-in, not part of CI's run."""
    if os.environ.get("SYNTH_BIG_MODELS") == "1":
        return
    skip = pytest.mark.skip(reason="a big model preset: set SYNTH_BIG_MODELS=1 (after `synth models install NAME`)")
    for item in items:
        if "bigmodel" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The sandbox image, built once per session (a no-op when its tag exists). No engine is a
    failure, never a skip: CI installs docker.io and starts dockerd (scripts/build_sandbox_image.sh)."""
    try:
        docker.from_env().ping()
    except docker.errors.DockerException as e:
        pytest.fail(f"Docker Engine unreachable ({e}): run scripts/build_sandbox_image.sh (installs docker.io, "
                    "starts dockerd)")
    from sandboxes.image.build import build_image

    return build_image(progress=lambda line: print(line, flush=True))  # the tag hashes tools/server too


@pytest.fixture(scope="session")
def k8s_double():
    """The Kubernetes API double (tests/k8s_double.py), one per session."""
    from tests.k8s_double import K8sDouble

    double = K8sDouble().start()
    yield double
    double.stop()


# Files a test leaves for a person to look at (screenshots): copied out of pytest's tmp dir to
# SYNTH_TEST_ARTIFACTS (default: <tmp>/synth-test-artifacts) and listed at the end of the run.
_ARTIFACTS: list[str] = []


@pytest.fixture
def artifact(request):
    import os
    import shutil
    import tempfile
    from pathlib import Path

    def keep(path: Path) -> Path:
        root = Path(os.environ.get("SYNTH_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "synth-test-artifacts"))
        root.mkdir(parents=True, exist_ok=True)
        target = root / f"{request.node.name}-{path.name}"
        shutil.copyfile(path, target)
        _ARTIFACTS.append(str(target))
        return target

    return keep


def pytest_terminal_summary(terminalreporter):
    if _ARTIFACTS:
        terminalreporter.section("test artifacts")
        for path in _ARTIFACTS:
            terminalreporter.write_line(path)
