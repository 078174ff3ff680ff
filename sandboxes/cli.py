"""`synth sandboxes ...`: build the sandbox image, remove leftover containers."""

from __future__ import annotations

import typer

from synth.core.errors import SandboxError

app = typer.Typer(help="Sandboxes: build the sandbox image (no registry needed), remove leftover containers or Pods.")


@app.command("build-image")
def build_image_cmd(
    force: bool = typer.Option(False, "--force", help="Rebuild even if the image for these inputs exists."),
    variant: str = typer.Option("python", "--variant", help="python: Debian + python3 + mcp; node: also nodejs + npm."),
) -> None:
    """Build the sandbox image locally (debootstrap -> docker import) and print its tag.

    The tag hashes the build inputs, so this is a no-op when nothing changed.

    The first build takes a few minutes; the Debian rootfs is cached under /var/cache/synth afterwards.
    """
    from sandboxes.image.build import build_image

    try:
        typer.echo(build_image(variant=variant, force=force))
    except SandboxError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)


@app.command("gc")
def gc_cmd(
    run: str = typer.Option(None, "--run", help="Only sandboxes of this run (label synth.run); default: all."),
    images: bool = typer.Option(False, "--images", help="Also remove sandbox images of older build inputs (docker)."),
    backend: str = typer.Option("docker", "--backend", help="docker: containers; k8s: Pods in --namespace."),
    namespace: str = typer.Option("synth", "--namespace", help="k8s: namespace of the sandbox Pods."),
    kubeconfig: str = typer.Option(None, "--kubeconfig", help="k8s: kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
    context: str = typer.Option(None, "--context", help="k8s: kubeconfig context (default: current)."),
    in_cluster: bool = typer.Option(False, "--in-cluster", help="k8s: use the service account of this Pod."),
) -> None:
    """Force-remove sandboxes (label synth.managed=1) left behind by killed runs."""
    if backend not in ("docker", "k8s"):
        typer.echo(f"error: --backend must be docker or k8s, got {backend!r}", err=True)
        raise typer.Exit(2)
    try:
        if backend == "k8s":
            from sandboxes.base import K8sConfig
            from sandboxes.gc import remove_k8s_leftovers

            cfg = K8sConfig(namespace=namespace, kubeconfig=kubeconfig, context=context, in_cluster=in_cluster)
            typer.echo(f"removed {remove_k8s_leftovers(cfg, run)} Pod(s) from namespace {namespace}")
            return
        from sandboxes.gc import remove_leftovers, remove_stale_images

        typer.echo(f"removed {remove_leftovers(run)} container(s)")
        if images:
            typer.echo(f"removed {remove_stale_images()} stale image(s)")
    except SandboxError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
