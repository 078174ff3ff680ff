"""`synth sandboxes ...`: build the sandbox image, remove leftover containers."""

from __future__ import annotations

import typer

from synth.errors import SandboxError

app = typer.Typer(help="Docker sandboxes: build the sandbox image (no registry needed), remove leftovers.")


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
    run: str = typer.Option(None, "--run", help="Only containers of this run (label synth.run); default: all."),
    images: bool = typer.Option(False, "--images", help="Also remove sandbox images of older build inputs."),
) -> None:
    """Force-remove sandbox containers (label synth.managed=1) left behind by killed runs."""
    from sandboxes.gc import remove_leftovers, remove_stale_images

    try:
        typer.echo(f"removed {remove_leftovers(run)} container(s)")
        if images:
            typer.echo(f"removed {remove_stale_images()} stale image(s)")
    except SandboxError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
