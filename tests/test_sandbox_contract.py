"""The sandbox contract, one suite run against every backend (as inspect_ai's sandbox self_check does):
local (under bubblewrap where it works, and without), docker (a real engine, marked docker), k8s
(the API double with the unmodified official client, marked k8s) and a toy backend that lives in
tests/toy_backend.py and joins the dispatch table with one monkeypatched line: a new backend is one
module plus one line. Backend-specific behaviour (limits, isolation, manifests, engine failures)
stays in test_sandbox_<backend>.py."""

from __future__ import annotations

import asyncio
import uuid
import warnings

import pytest

import sandboxes
from sandboxes import backend_of, provision
from sandboxes.base import Pipe, Sandbox
from sandboxes.docker import DockerConfig
from sandboxes.gc import remove_leftovers, remove_run_leftovers
from sandboxes.k8s import K8sConfig
from sandboxes.local import LocalConfig
from sandboxes.pool import WarmPool
from synth.core.errors import ConfigError, SandboxError
from tests.toy_backend import ToyConfig, ToySandbox

ECHO = 'while read -r line; do echo "got $line"; done'  # sh only: every backend's image has it


@pytest.fixture(params=["local", "local-none", "toy", pytest.param("docker", marks=pytest.mark.docker),
                        pytest.param("k8s", marks=pytest.mark.k8s)])
def cfg(request, tmp_path, monkeypatch):
    """A config of one backend; sandboxes made from it are started through the backend table."""
    if request.param == "local":
        return LocalConfig(root=str(tmp_path))
    if request.param == "local-none":
        warnings.simplefilter("ignore", RuntimeWarning)  # it warns loudly that nothing is isolated, by design
        return LocalConfig(root=str(tmp_path), isolation="none")
    if request.param == "toy":
        monkeypatch.setitem(sandboxes.BACKENDS, "toy", ToySandbox)  # the one line a new backend adds
        return ToyConfig(root=str(tmp_path))
    if request.param == "docker":
        return DockerConfig(image=request.getfixturevalue("docker_image"), memory_mb=256, pids_limit=64)
    double = request.getfixturevalue("k8s_double")
    double.script.clear()
    return K8sConfig(kubeconfig=str(double.kubeconfig(tmp_path / "kubeconfig")), image="sandbox:test",
                     ready_timeout_s=5)


@pytest.fixture
def run() -> str:
    return f"contract-{uuid.uuid4().hex[:8]}"  # the docker engine is shared: only ever touch our own run


async def test_provision_starts_a_sandbox_and_always_stops_it(cfg, run):
    async with provision(cfg, labels={"synth.run": run}) as sb:
        assert isinstance(sb, Sandbox) and sb.workspace.startswith("/")
        await sb.start()  # idempotent
        assert await sb.is_alive()
    assert not await sb.is_alive()
    with pytest.raises(SandboxError):
        await sb.exec(["true"])
    await sb.stop()  # idempotent
    with pytest.raises(RuntimeError, match="the episode failed"):
        async with provision(cfg, labels={"synth.run": run}) as failed:
            raise RuntimeError("the episode failed")
    assert not await failed.is_alive()


async def test_exec_gives_output_exit_code_and_127_for_a_missing_command(cfg):
    async with provision(cfg) as sb:
        result = await sb.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (3, "out\n", "err\n", False)
        assert result.duration_s > 0
        assert (await sb.exec(["no-such-command-xyz"])).exit_code == 127


async def test_exec_timeout_ends_the_command(cfg):
    async with provision(cfg) as sb:
        result = await sb.exec(["sh", "-c", "sleep 30"], timeout=1)
        assert result.timed_out and result.exit_code != 0 and result.duration_s < 10
        assert (await sb.exec(["echo", "still", "here"])).stdout == "still here\n"


async def test_files_round_trip_and_stay_in_the_workspace(cfg):
    blob = bytes(range(256)) * 64
    async with provision(cfg) as sb:
        await sb.write_file("d/e/f.bin", blob)
        assert await sb.read_file("d/e/f.bin") == blob
        assert await sb.read_file(f"{sb.workspace}/d/e/f.bin") == blob
        await sb.write_file("empty", b"")
        assert await sb.read_file("empty") == b""
        assert (await sb.exec(["cat", "d/e/f.bin"])).stdout.startswith("\x00\x01\x02")
        await sb.exec(["sh", "-c", "echo made-inside > inside.txt"])
        assert await sb.read_file("inside.txt") == b"made-inside\n"
        with pytest.raises(SandboxError):
            await sb.read_file("missing.txt")
        for bad in ("../escape.txt", "d/../../escape.txt", "/etc/passwd"):
            with pytest.raises(SandboxError, match="outside the workspace"):
                await sb.read_file(bad)
            with pytest.raises(SandboxError, match="outside the workspace"):
                await sb.write_file(bad, b"x")


async def test_a_spawned_process_is_a_pipe(cfg):
    async with provision(cfg) as sb:
        pipe = await sb.spawn(["sh", "-c", ECHO])
        assert isinstance(pipe, Pipe)
        for word in (b"hello", b"again"):
            await pipe.write(word + b"\n")
            assert await pipe.readline() == b"got " + word + b"\n"
        await pipe.close()
        await pipe.close()  # idempotent
        assert await pipe.read() == b""


async def test_two_sandboxes_share_nothing(cfg):
    async with provision(cfg) as a, provision(cfg) as b:
        assert a.id != b.id
        await a.write_file("secret.txt", b"a's")
        with pytest.raises(SandboxError):
            await b.read_file("secret.txt")
        assert (await b.exec(["ls", "-A"])).stdout == ""


async def test_leftovers_of_a_killed_run_are_removed_by_its_label(cfg, run):
    backend = backend_of(cfg)
    killed = [backend(cfg, {"synth.run": label}) for label in (run, run, f"{run}-other")]
    try:
        for sb in killed:
            await sb.start()  # and no stop(): the run was killed
        assert await asyncio.to_thread(remove_leftovers, cfg, run) == 2
        assert [await sb.is_alive() for sb in killed] == [False, False, True]
        assert await asyncio.to_thread(remove_leftovers, cfg, f"{run}-other") == 1
        assert not await killed[2].is_alive()
    finally:
        for sb in killed:
            await sb.stop()


async def test_provenance_names_the_backend(cfg):
    kind, image = backend_of(cfg).provenance(cfg)
    assert kind == cfg.type and isinstance(image, str)
    if cfg.type == "docker":
        assert image == cfg.image
    assert backend_of(cfg).promises(cfg).startswith(cfg.type)  # what the card and the summary say


async def test_a_pooled_backend_resets_to_clean_and_spares_residents_others_refuse(cfg, run):
    if not backend_of(cfg).pools:
        with pytest.raises(ConfigError, match="not pooled"):
            WarmPool(cfg, size=1)
        async with provision(cfg) as sb:
            with pytest.raises(SandboxError):
                await sb.reset()
        return
    async with WarmPool(cfg, size=1, labels={"synth.run": run}, acquire_timeout_s=30) as pool:
        async with pool.acquire() as sb:
            await sb.write_file("x/secret.txt", b"a")
            resident = await sb.spawn(["sh", "-c", ECHO], resident=True)
            episode = await sb.spawn(["sh", "-c", ECHO])
            for pipe in (resident, episode):
                await pipe.write(b"hi\n")
                assert await pipe.readline() == b"got hi\n"
            first = sb.id
        async with asyncio.timeout(30):
            while pool.idle < 1:
                await asyncio.sleep(0.02)
        async with pool.acquire() as sb:
            assert sb.id == first and pool.stats["replaced"] == 0
            assert (await sb.exec(["ls", "-A"])).stdout == ""
            assert await episode.read() == b""  # the episode's process was ended
            await resident.write(b"still here\n")
            assert await resident.readline() == b"got still here\n"


async def test_leftovers_are_told_apart_by_run_directory_not_only_by_name(cfg, run):
    """Two run dirs of one name (say `runs/a/t` and `runs/b/t`): opening one removes only its own."""
    backend = backend_of(cfg)
    mine, theirs = (backend(cfg, {"synth.run": run, "synth.run_id": rid}) for rid in ("id-mine", "id-theirs"))
    try:
        await mine.start()
        await theirs.start()
        assert await asyncio.to_thread(remove_run_leftovers, cfg, "id-mine") == 1
        assert not await mine.is_alive() and await theirs.is_alive()
    finally:
        await mine.stop()
        await theirs.stop()
