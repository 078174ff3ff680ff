"""The k8s backend with the unmodified official client, against the API double in tests/k8s_double.py:
what is particular to it (the Pod manifest, scheduling and pull failures, throttling, the exec
protocol). The contract every backend meets is tests/test_sandbox_contract.py.

What this does not prove (see docs/scaling.md): real kubelet exec semantics, image pulls, the
NetworkPolicy being enforced by a CNI, quotas and the v5 exec protocol of newer clusters.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from sandboxes import k8s_api, provision
from sandboxes.k8s import K8sConfig, K8sSandbox
from synth.core.errors import SandboxError
from tests.k8s_double import K8sDouble
from tools.mcp_pipe import mcp_session

pytestmark = pytest.mark.k8s
SERVER = (Path(__file__).parent / "fixtures" / "counter_server.py").read_bytes()


@pytest.fixture
def double(k8s_double) -> K8sDouble:
    return k8s_double


@pytest.fixture
def cfg(double, tmp_path, monkeypatch) -> K8sConfig:
    monkeypatch.setattr(k8s_api, "_BACKOFF_BASE_S", 0.01)  # keep retry tests fast; the logic is the same
    double.script.clear()
    return K8sConfig(kubeconfig=str(double.kubeconfig(tmp_path / "kubeconfig")), namespace="synth",
                     image="sandbox:test", ready_timeout_s=5)


def _managed(double: K8sDouble) -> list[str]:
    return [name for (_, name), pod in double.pods.items() if pod.manifest["metadata"]["labels"].get("synth.managed") == "1"]


async def test_the_pod_is_locked_down_labelled_and_deleted(cfg, double):
    async with provision(cfg, labels={"synth.run": "t1"}) as sb:
        await sb.write_file("d/blob.bin", bytes(range(256)) * 1000)  # larger than one exec frame
        assert await sb.read_file("/workspace/d/blob.bin") == bytes(range(256)) * 1000
        pod = double.pods[("synth", sb.name)].manifest
        labels = pod["metadata"]["labels"]
        assert labels == {"synth.run": "t1", "synth.episode": sb.id, "synth.managed": "1"}
        spec, container = pod["spec"], pod["spec"]["containers"][0]
        assert spec["automountServiceAccountToken"] is False and spec["activeDeadlineSeconds"] == 3600
        assert spec["securityContext"]["runAsUser"] == 1000 and spec["securityContext"]["runAsNonRoot"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "runAsUser": 1000, "privileged": False, "capabilities": {"drop": ["ALL"]}}
        assert container["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/workspace", "/tmp"}
    assert ("synth", sb.name) not in double.pods
    await sb.stop()  # idempotent


async def test_mcp_server_over_the_exec_stream(cfg):
    async with provision(cfg) as sb:
        await sb.write_file("counter_server.py", SERVER)
        async with mcp_session(sb, [sys.executable, "counter_server.py"]) as session:
            tools = {t.name for t in (await session.list_tools()).tools}
            assert tools == {"increment", "crash"}
            for expected in (1, 2, 3):
                result = await session.call_tool("increment", {"by": 1})
                assert result.structured_content == {"result": expected}
        assert (await sb.read_file("counter.txt")) == b"3"


async def test_v5_protocol_closes_stdin(cfg, double):
    """Newer clusters negotiate v5, whose stdin EOF lets `cat` end and pipes close at once."""
    double.protocols = ("v5.channel.k8s.io", "v4.channel.k8s.io")
    try:
        async with provision(cfg) as sb:
            await sb.write_file("a/b.txt", b"x" * 100_000)
            assert (await sb.exec(["wc", "-c", "a/b.txt"])).stdout.split()[0] == "100000"
            pipe = await sb.spawn(["cat"])
            await pipe.write(b"hello\n")
            assert await pipe.readline() == b"hello\n"
            await pipe.close()
            assert pipe.status and b"Success" in pipe.status  # cat saw EOF and exited 0
    finally:
        double.protocols = ("v4.channel.k8s.io",)


async def test_pod_that_never_schedules_times_out_with_the_reason(cfg, double):
    sb = K8sSandbox(cfg.model_copy(update={"image": "unschedulable", "ready_timeout_s": 0.5}), {})
    with pytest.raises(SandboxError, match="not running after 0.5s.*Unschedulable.*Insufficient memory"):
        async with provision(sb.cfg):
            pass
    assert not _managed(double)


async def test_image_pull_failure_is_a_sandbox_error_and_the_pod_is_deleted(cfg, double):
    with pytest.raises(SandboxError, match="ErrImagePull"):
        async with provision(cfg.model_copy(update={"image": "pull-fails"})):
            pass
    assert not _managed(double)


async def test_name_collision_retries_with_a_new_name(cfg, double):
    double.script["POST"].append((409, {"kind": "Status", "status": "Failure", "reason": "AlreadyExists", "code": 409}, {}))
    async with provision(cfg) as sb:
        assert sb.name in {name for _, name in double.pods}
        assert (await sb.exec(["true"])).exit_code == 0
    assert [s for m, p, s in double.requests if m == "POST"][-2:] == [409, 201]


async def test_throttling_storm_backs_off_and_honors_retry_after(cfg, double):
    storm = (429, {"kind": "Status", "status": "Failure", "reason": "TooManyRequests", "code": 429}, {"Retry-After": "0"})
    double.script["POST"].extend([storm] * 4)
    double.script["GET"].extend([storm] * 3)
    async with provision(cfg) as sb:
        assert (await sb.exec(["echo", "ok"])).stdout == "ok\n"
    statuses = [s for _, _, s in double.requests[-40:]]
    assert statuses.count(429) >= 7 and not double.script["POST"] and not double.script["GET"]


async def test_too_many_429s_become_a_sandbox_error_not_a_crash(cfg, double):
    storm = (429, {"kind": "Status", "status": "Failure", "reason": "TooManyRequests", "code": 429}, {"Retry-After": "0"})
    double.script["POST"].extend([storm] * 3)
    with pytest.raises(SandboxError, match="429"):
        async with provision(cfg.model_copy(update={"max_retries": 2})):
            pass


async def test_quota_exceeded_is_a_sandbox_error(cfg, double):
    quota = {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403, "message":
             'pods "synth-x" is forbidden: exceeded quota: synth-quota, requested: pods=1, used: pods=10, limited: pods=10'}
    double.script["POST"].append((403, quota, {}))
    with pytest.raises(SandboxError, match="ResourceQuota of namespace synth exceeded"):
        async with provision(cfg):
            pass


async def test_pod_deleted_from_outside_is_reported(cfg, double):
    async with provision(cfg) as sb:
        double.pods.pop(("synth", sb.name))
        with pytest.raises(SandboxError, match="gone"):
            await sb.exec(["true"])


async def test_concurrent_episodes(cfg, double):
    async def episode(i: int) -> str:
        async with provision(cfg.model_copy(update={"create_concurrency": 3})) as sb:
            await sb.write_file("i.txt", str(i).encode())
            return (await sb.exec(["cat", "i.txt"])).stdout

    assert await asyncio.gather(*(episode(i) for i in range(8))) == [str(i) for i in range(8)]
    assert not _managed(double)


async def test_gc_without_a_run_removes_every_managed_pod(cfg, double):
    killed = [K8sSandbox(cfg, {"synth.run": run}) for run in ("dead", "other")]
    for sb in killed:
        await sb.start()  # and never stop(): killed runs
    assert await asyncio.to_thread(K8sSandbox.remove_leftovers, cfg, None) == 2
    assert not _managed(double)


# -- deploy/k8s manifests: every key known to the official client's models, every value of the right type --
DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def _unknown_keys(data, type_name: str, path: str) -> list[str]:
    """Keys the client's models do not define, found recursively via attribute_map/openapi_types
    (the models' from_dict drops unknown keys silently, so deserializing alone misses typos)."""
    import re

    from kubernetes.client import models

    if m := re.fullmatch(r"Optional\[(.*)\]", type_name):
        return _unknown_keys(data, m.group(1), path)
    if m := re.fullmatch(r"List\[(.*)\]", type_name):
        return [k for i, item in enumerate(data) for k in _unknown_keys(item, m.group(1), f"{path}[{i}]")]
    if m := re.fullmatch(r"Dict\[[^,]*, (.*)\]", type_name):
        return [k for key, v in data.items() for k in _unknown_keys(v, m.group(1), f"{path}.{key}")]
    cls = getattr(models, type_name, None)
    if cls is None:  # str, int, bool, object, datetime, ...
        return []
    assert isinstance(data, dict), f"{path}: expected a mapping for {type_name}, got {data!r}"
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    return [k for key, value in data.items()
            for k in ([f"{path}.{key}"] if key not in by_json else
                      _unknown_keys(value, cls.openapi_types[by_json[key]], f"{path}.{key}"))]


def _validate(doc: dict, where: str):
    import json

    from kubernetes.client import ApiClient

    type_name = doc["apiVersion"].rsplit("/", 1)[-1].capitalize() + doc["kind"]  # batch/v1 Job -> V1Job
    assert not _unknown_keys(doc, type_name, where), _unknown_keys(doc, type_name, where)
    # Types and required fields: the client's pydantic models reject e.g. a string where an int goes.
    return ApiClient().deserialize(json.dumps(doc), type_name, "application/json")


def _docs() -> list[tuple[str, dict]]:
    import yaml

    return [(f"{p.name}#{i}", d) for p in sorted(DEPLOY.glob("*.yaml")) for i, d in enumerate(yaml.safe_load_all(p.read_text())) if d]


def test_deploy_manifests_are_valid_kubernetes_objects():
    docs = _docs()
    kinds = sorted(d["kind"] for _, d in docs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "ConfigMap",
                            "PersistentVolumeClaim", "Job", "ResourceQuota"])
    for where, doc in docs:
        _validate(doc, where)
    by_kind = {d["kind"]: d for _, d in docs}
    job = by_kind["Job"]["spec"]
    env = {e["name"]: e.get("value") for e in job["template"]["spec"]["containers"][0]["env"]}
    assert job["completionMode"] == "Indexed" and int(env["SHARDS"]) == job["completions"]
    assert "--shard \"${JOB_COMPLETION_INDEX}/${SHARDS}\"" in job["template"]["spec"]["containers"][0]["args"][0]
    policy = by_kind["NetworkPolicy"]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"synth.managed": "1"}} and "ingress" not in policy and "egress" not in policy
    rules = {r["resources"][0]: set(r["verbs"]) for r in by_kind["Role"]["rules"]}
    assert rules["pods"] == {"create", "get", "list", "delete", "watch"} and "create" in rules["pods/exec"]


def test_typos_in_manifests_are_caught():
    _, pod_like = next((w, d) for w, d in _docs() if d["kind"] == "Job")
    import copy

    bad = copy.deepcopy(pod_like)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(AssertionError, match="readOnlyRootFilesytem"):
        _validate(bad, "job")
    bad = copy.deepcopy(pod_like)
    bad["spec"]["completions"] = "four"
    with pytest.raises(Exception, match="completions|int"):
        _validate(bad, "job")


def test_the_sandbox_pod_and_the_shipped_config_are_valid(cfg):
    from synth.config import RunConfig
    import yaml

    _validate(k8s_api.pod_manifest(cfg, "synth-x", "img", {"synth.managed": "1"}), "pod")
    config_map = next(d for _, d in _docs() if d["kind"] == "ConfigMap")
    run = RunConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))
    assert run.rollout.sandbox.type == "k8s" and run.rollout.sandbox.in_cluster


async def test_executable_toolset_runs_on_a_tool_host_over_the_exec_stream(cfg):
    import json

    from tools.executable import ExecutableToolset
    from synth.core.records import ToolSpec

    notes = Path(__file__).parent / "fixtures" / "toolsets" / "notes"
    specs = [ToolSpec.model_validate(t) for t in json.loads((notes / "tools.json").read_text())]
    # The double runs Pod processes here: put the python that has jsonschema first, as the image does.
    cfg = cfg.model_copy(update={"env": {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}})
    async with provision(cfg) as sb:
        async with ExecutableToolset(specs, sb, module=(notes / "impl.py").read_text()) as rt:
            await rt.reset({"owner": "pod"})
            created = await rt.call("create_note", {"title": "a", "body": "b"})
            assert not created.is_error and json.loads(created.text)["id"] == 1
            assert (await rt.call("get_note", {"note_id": 9})).is_error
            final = await rt.finish()
        assert final["owner"] == "pod" and set(final["notes"]) == {"1"}
        assert json.loads(await sb.read_file("state.json")) == final
