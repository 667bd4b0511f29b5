"""The hostile manifest: exactly the good records indexed, every bad line named, no traceback,
nothing written outside the index, stored PNGs free of metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from faults.hostile import hostile_manifest

from mmedrag.index import Index


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmedrag", *args], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)


def png_chunks(path: Path) -> list[bytes]:
    data = path.read_bytes()
    kinds, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        kinds.append(data[offset + 4:offset + 8])
        offset += 12 + length
    return kinds


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[int]]:
    return hostile_manifest(tmp_path_factory.mktemp("hostile") / "inner" / "data")


def test_skip_indexes_exactly_the_good_records(hostile: tuple[Path, list[str], list[int]]
                                               ) -> None:
    manifest, good, bad_lines = hostile
    root = manifest.parent
    out = run("index", str(manifest), "--index", str(root / "idx"), "--config",
              str(root / "config.yaml"), "--on-error", "skip")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    for line in bad_lines:
        assert f"{manifest}:{line}" in out.stderr, (line, out.stderr)
    assert "bomb.png" in out.stderr and "over the limit" in out.stderr
    assert "leaves the manifest's folder" in out.stderr
    index = Index.open(root / "idx")
    stored = sorted(r.id for r in index.text_store.iter_records())
    assert stored == sorted(good)
    # nothing escaped: the index folder holds only its own files, images named by digest
    assert not list(root.parent.rglob("ESCAPED*"))
    images = list((root / "idx" / "images").iterdir())
    assert len(images) == len(good) and all(len(p.stem) == 32 for p in images)
    for path in images:
        assert set(png_chunks(path)) <= {b"IHDR", b"IDAT", b"IEND"}, path
    rotated = index.get(["exif"])[0]
    from PIL import Image

    with Image.open(index.image_path(rotated)) as image:
        assert image.size == (20, 40)  # EXIF orientation applied
    index.close()


def test_fail_indexes_nothing(hostile: tuple[Path, list[str], list[int]]) -> None:
    manifest, _, bad_lines = hostile
    root = manifest.parent
    out = run("index", str(manifest), "--index", str(root / "idx_fail"), "--config",
              str(root / "config.yaml"), "--on-error", "fail")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and f"{manifest}:{bad_lines[0]}" in out.stderr
    index = Index.open(root / "idx_fail")
    assert index.count() == 0
    index.close()


def test_fail_on_a_bad_image_indexes_nothing(hostile: tuple[Path, list[str], list[int]]
                                             ) -> None:
    manifest, _, _ = hostile
    root = manifest.parent
    lines = manifest.read_text().splitlines()
    bomb = next(n for n, line in enumerate(lines) if "bomb.png" in line)
    only_images = root / "images_only.jsonl"
    only_images.write_text("\n".join(lines[:5] + [lines[bomb]]) + "\n")
    out = run("index", str(only_images), "--index", str(root / "idx_fail2"), "--config",
              str(root / "config.yaml"), "--on-error", "fail", "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{only_images}:6 [image]" in out.stderr and "over the limit" in out.stderr
    index = Index.open(root / "idx_fail2")
    assert index.count() == 0
    index.close()


def test_icc_profile_is_not_stored(tmp_path: Path) -> None:
    from faults.hostile import TINY_CONFIG, cmyk_jpeg

    icc = b"ICCPROFILE-SECRET-" + b"x" * 200
    (tmp_path / "icc.jpg").write_bytes(cmyk_jpeg(icc))
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "image": "icc.jpg", "text": "t"}))
    (tmp_path / "c.yaml").write_text(TINY_CONFIG)
    out = run("index", str(tmp_path / "m.jsonl"), "--index", str(tmp_path / "idx"),
              "--config", str(tmp_path / "c.yaml"))
    assert out.returncode == 0, out.stderr
    for path in (tmp_path / "idx").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"ICCPROFILE-SECRET" not in data
            assert b"iCCP" not in data or path.suffix != ".png"
            assert zlib.compress(b"ICCPROFILE-SECRET") not in data


def test_allow_outside_admits_one_folder(tmp_path: Path) -> None:
    from faults.hostile import SAMPLE, TINY_CONFIG

    inner = tmp_path / "inner"
    inner.mkdir()
    image = sorted((SAMPLE / "images").iterdir())[0]
    (inner / "m.jsonl").write_text(json.dumps({"id": "a", "image": str(image), "text": "t"}))
    (inner / "c.yaml").write_text(TINY_CONFIG)
    base = ["index", str(inner / "m.jsonl"), "--config", str(inner / "c.yaml"), "--json"]
    refused = run(*base, "--index", str(tmp_path / "i1"))
    assert refused.returncode == 0 and json.loads(refused.stdout)["count"] == 0
    assert "--allow-outside" in refused.stdout
    allowed = run(*base, "--index", str(tmp_path / "i2"), "--allow-outside", str(SAMPLE))
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["count"] == 1
