"""A minimal Kubernetes API double: just the Pod endpoints and the exec websocket the k8s backend uses.

No apiserver can be installed here, so the backend is tested with the UNMODIFIED official client
against this server on 127.0.0.1. It implements:

- POST   /api/v1/namespaces/{ns}/pods                 create (409 on a taken name)
- GET    /api/v1/namespaces/{ns}/pods/{name}          read, with a status that evolves (see `image`)
- DELETE /api/v1/namespaces/{ns}/pods/{name}          delete at once (kills its processes)
- GET    /api/v1/namespaces/{ns}/pods?labelSelector=  list by equality selectors `k=v,k2=v2`
- GET    /api/v1/namespaces/{ns}/pods/{name}/exec     websocket, subprotocol v4.channel.k8s.io:
  binary frames prefixed by a channel byte (0 stdin, 1 stdout, 2 stderr, 3 a v1.Status at the end);
  with `protocols` set to offer v5 first, also v5's close frame (255, 0) = EOF on stdin.

A Pod is a local directory; an exec is a local subprocess with cwd = that directory and every
argument starting with /workspace rewritten to it. Images steer the status: `pull-fails` waits in
ErrImagePull, `unschedulable` stays PodScheduled=False; anything else runs after `start_delay_s`.
`script` queues canned answers (status, body, headers) for the next requests of a method.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web


@dataclass
class FakePod:
    manifest: dict
    workspace: Path
    created: float
    procs: set = field(default_factory=set)


class K8sDouble:
    def __init__(self, start_delay_s: float = 0.05):
        self.start_delay_s = start_delay_s
        self.protocols = ("v4.channel.k8s.io",)  # add v5 first to test what newer clusters negotiate
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.script: dict[str, list[tuple[int, dict, dict]]] = defaultdict(list)  # method -> canned answers
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self.root = Path(tempfile.mkdtemp(prefix="k8s-double-"))
        self.host = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle (a thread with its own loop, so blocking client calls can never stall it) --------
    def start(self) -> "K8sDouble":
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(middlewares=[self._scripted])
        base = "/api/v1/namespaces/{ns}/pods"
        app.router.add_post(base, self._create)
        app.router.add_get(base, self._list)
        app.router.add_get(base + "/{name}", self._read)
        app.router.add_delete(base + "/{name}", self._delete)
        app.router.add_get(base + "/{name}/exec", self._exec)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.host = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def shutdown():
            for pod in list(self.pods.values()):
                self._kill(pod)
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this server (no auth), so tests take the real loading path."""
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "double",
               "clusters": [{"name": "double", "cluster": {"server": self.host}}],
               "users": [{"name": "nobody", "user": {}}],
               "contexts": [{"name": "double", "context": {"cluster": "double", "user": "nobody"}}]}
        path.write_text(json.dumps(cfg))
        return path

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _status(code: int, reason: str, message: str, headers: dict | None = None) -> web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}
        return web.json_response(body, status=code, headers=headers)

    @web.middleware
    async def _scripted(self, request: web.Request, handler):
        if self.script[request.method]:
            status, body, headers = self.script[request.method].pop(0)
            response = web.json_response(body, status=status, headers=headers)
        else:
            response = await handler(request)
        self.requests.append((request.method, request.path, response.status))
        return response

    def _view(self, pod: FakePod) -> dict:
        """The manifest plus a status derived from the image and the Pod's age."""
        image = pod.manifest["spec"]["containers"][0]["image"]
        started = time.monotonic() - pod.created >= self.start_delay_s
        cs = {"name": "sandbox", "image": image, "imageID": "", "ready": False, "restartCount": 0}
        if image == "unschedulable":
            status = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                      "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}]}
        elif image == "pull-fails":
            cs["state"] = {"waiting": {"reason": "ErrImagePull", "message": f'failed to pull image "{image}": not found'}}
            status = {"phase": "Pending", "containerStatuses": [cs]}
        elif not started:
            cs["state"] = {"waiting": {"reason": "ContainerCreating"}}
            status = {"phase": "Pending", "containerStatuses": [cs]}
        else:
            cs.update(ready=True, started=True, state={"running": {}})
            status = {"phase": "Running", "containerStatuses": [cs]}
        return {**pod.manifest, "status": status}

    def _pod(self, request: web.Request) -> FakePod | None:
        return self.pods.get((request.match_info["ns"], request.match_info["name"]))

    def _kill(self, pod: FakePod) -> None:
        for proc in list(pod.procs):
            if proc.returncode is None:
                proc.kill()
        shutil.rmtree(pod.workspace, ignore_errors=True)

    # -- REST ------------------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        ns, manifest = request.match_info["ns"], await request.json()
        name = manifest["metadata"]["name"]
        if (ns, name) in self.pods:
            return self._status(409, "AlreadyExists", f'pods "{name}" already exists')
        manifest["metadata"].update(namespace=ns, uid=f"uid-{name}")
        workspace = self.root / ns / name
        workspace.mkdir(parents=True)
        pod = self.pods[(ns, name)] = FakePod(manifest, workspace, time.monotonic())
        return web.json_response(self._view(pod), status=201)

    async def _read(self, request: web.Request) -> web.Response:
        if (pod := self._pod(request)) is None:
            return self._status(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        return web.json_response(self._view(pod))

    async def _delete(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        if (pod := self.pods.pop(key, None)) is None:
            return self._status(404, "NotFound", f'pods "{key[1]}" not found')
        self._kill(pod)
        return web.json_response(self._view(pod))

    async def _list(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        wanted = dict(kv.split("=", 1) for kv in filter(None, request.query.get("labelSelector", "").split(",")))
        items = [self._view(p) for (pns, _), p in self.pods.items() if pns == ns
                 and all(p.manifest["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    # -- exec ------------------------------------------------------------------------------------
    async def _exec(self, request: web.Request) -> web.StreamResponse:
        if (pod := self._pod(request)) is None:
            return self._status(404, "NotFound", f'pods "{request.match_info["name"]}" not found')
        if self._view(pod)["status"]["phase"] != "Running":
            return self._status(400, "BadRequest", "pod is not running")
        argv = [a.replace("/workspace", str(pod.workspace), 1) if a.startswith("/workspace") else a
                for a in request.query.getall("command")]
        want_stdin = request.query.get("stdin") == "true"
        ws = web.WebSocketResponse(protocols=self.protocols)
        await ws.prepare(request)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(pod.workspace)}
        for item in pod.manifest["spec"]["containers"][0].get("env") or []:  # as a kubelet would
            env[item["name"]] = item.get("value", "")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=pod.workspace, env=env, start_new_session=True,
                stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as e:  # what a container runtime reports: no exit code, a message
            status = {"status": "Failure", "reason": "InternalError", "message": f"exec failed: {e}"}
            await ws.send_bytes(b"\x03" + json.dumps(status).encode())
            await ws.close()
            return ws
        pod.procs.add(proc)

        async def pump(reader, channel: bytes):
            while chunk := await reader.read(65536):
                await ws.send_bytes(channel + chunk)

        async def feed():  # client frames -> stdin; the client hanging up is EOF on stdin
            async for msg in ws:
                if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                    data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                    if data == b"\xff\x00" and proc.stdin:  # v5 only: the client closed stdin
                        proc.stdin.close()
                    elif data[:1] == b"\x00" and proc.stdin and not proc.stdin.is_closing():
                        proc.stdin.write(data[1:])
                        try:
                            await proc.stdin.drain()
                        except (BrokenPipeError, ConnectionResetError):
                            pass
            if proc.stdin:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 2.0)
            except asyncio.TimeoutError:
                proc.kill()

        feeder = asyncio.create_task(feed())
        try:
            await asyncio.gather(pump(proc.stdout, b"\x01"), pump(proc.stderr, b"\x02"))
            code = await proc.wait()
            feeder.cancel()  # close() below reads the client's close frame: one reader at a time
            await asyncio.gather(feeder, return_exceptions=True)
            if code == 0:
                status = {"status": "Success", "metadata": {}}
            else:
                status = {"status": "Failure", "reason": "NonZeroExitCode",
                          "message": f"command terminated with non-zero exit code: {code}",
                          "details": {"causes": [{"reason": "ExitCode", "message": str(code if code > 0 else 128 - code)}]}}
            await ws.send_bytes(b"\x03" + json.dumps(status).encode())
            await ws.close()
        except ConnectionResetError:
            pass  # the client went away first
        finally:
            pod.procs.discard(proc)
            feeder.cancel()
            if proc.returncode is None:
                proc.kill()
        return ws
