"""`synth sandboxes ...`: build the sandbox image, remove leftover sandboxes of any backend."""

from __future__ import annotations

import typer

from sandboxes import BACKENDS, sandbox_config
from sandboxes.gc import remove_leftovers
from synth.commands.common import exit_on_errors
from synth.core.errors import ConfigError

app = typer.Typer(help="Sandboxes: build the sandbox image (no registry needed), remove leftover sandboxes "
                  "(containers, Pods, local workspaces).")


@app.command("build-image")
def build_image_cmd(
    force: bool = typer.Option(False, "--force", help="Rebuild even if the image for these inputs exists."),
    variant: str = typer.Option("python", "--variant", help="python: Debian + python3 + mcp; node: also nodejs + npm; mcp: also git and the catalog's "
                                 "reference MCP servers at /opt/mcp-servers (rollout.sandbox.variant: mcp)."),
) -> None:
    """Build the sandbox image locally (debootstrap -> docker import) and print its tag.

    The tag hashes the build inputs, so this is a no-op when nothing changed.

    The first build takes a few minutes; the Debian rootfs is cached under /var/cache/synth afterwards.
    """
    from sandboxes.image.build import build_image

    with exit_on_errors():
        typer.echo(build_image(variant=variant, force=force))


@app.command("gc")
def gc_cmd(
    run: str = typer.Option(None, "--run", help="Only sandboxes of this run (label synth.run); default: all."),
    images: bool = typer.Option(False, "--images", help="Also remove sandbox images of older build inputs from the Docker engine."),
    backend: str = typer.Option("docker", "--backend", help=f"Which sandboxes: {', '.join(BACKENDS)} "
                                "(docker: containers; k8s: Pods in --namespace; local: workspace dirs)."),
    namespace: str = typer.Option(None, "--namespace", help="k8s: namespace of the sandbox Pods (default: synth)."),
    kubeconfig: str = typer.Option(None, "--kubeconfig", help="k8s: kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
    context: str = typer.Option(None, "--context", help="k8s: kubeconfig context (default: current)."),
    in_cluster: bool = typer.Option(False, "--in-cluster", help="k8s: use the service account of this Pod."),
) -> None:
    """Force-remove sandboxes left behind by killed runs (found by their labels: synth.run, synth.managed=1)."""
    given = {"namespace": namespace, "kubeconfig": kubeconfig, "context": context, "in_cluster": in_cluster or None}
    with exit_on_errors():
        if backend not in BACKENDS:
            raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        cfg = sandbox_config({"type": backend, **{k: v for k, v in given.items() if v is not None}})
        typer.echo(f"removed {remove_leftovers(cfg, run)} {backend} sandbox(es)")
        if images:
            from sandboxes.docker import remove_stale_images

            typer.echo(f"removed {remove_stale_images()} stale image(s)")
