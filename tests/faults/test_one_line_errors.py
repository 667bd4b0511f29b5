"""Every CLI mistake is one line on stderr with the right exit code, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faults.hostile import TINY_CONFIG


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmedrag", *args], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=timeout)


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = [line for line in out.stderr.splitlines() if not line.startswith("indexing")]
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    (tmp_path / "c.yaml").write_text(TINY_CONFIG)
    return tmp_path / "c.yaml"


def manifest(tmp_path: Path, data: bytes, name: str = "m.jsonl") -> Path:
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


@pytest.mark.parametrize("target", ["file", "/proc/1/nope"])
def test_index_pointing_at_a_file_or_unwritable_place(tmp_path: Path, config: Path,
                                                      target: str) -> None:
    path = manifest(tmp_path, b'{"id": "a", "text": "t"}\n')
    where = tmp_path / "a-file" if target == "file" else Path(target)
    if target == "file":
        where.write_text("x")
    out = run("index", str(path), "--index", str(where), "--config", str(config))
    assert out.returncode == 2
    assert str(where) in one_line(out)


def test_invalid_utf8_jsonl_and_csv_name_the_line(tmp_path: Path, config: Path) -> None:
    jsonl = manifest(tmp_path, b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "\xff"}\n')
    csv = manifest(tmp_path, b"id,text\na,ok\nb,\xff\n", "m.csv")
    for path, line in ((jsonl, 2), (csv, 3)):
        out = run("index", str(path), "--index", str(tmp_path / path.suffix), "--config",
                  str(config), "--json")
        assert out.returncode == 0 and "Traceback" not in out.stderr
        summary = json.loads(out.stdout)
        assert summary["count"] == 1 and summary["errors"] == [f"{path}:{line}: not UTF-8 text"
                                                              + (" (byte 21)" if line == 2
                                                                 else "")]


def test_bom_does_not_drop_the_first_record(tmp_path: Path, config: Path) -> None:
    path = manifest(tmp_path, b'\xef\xbb\xbf{"id": "a", "text": "one"}\n{"id": "b", "text": "t"}\n')
    out = run("index", str(path), "--index", str(tmp_path / "idx"), "--config", str(config),
              "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["count"] == 2


def test_stop_word_only_corpus(tmp_path: Path, config: Path) -> None:
    path = manifest(tmp_path, b'{"id": "a", "title": "", "content": "the and of"}\n')
    out = run("index", str(path), "--index", str(tmp_path / "idx"), "--config", str(config),
              "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["count"] == 1, out.stderr
    found = run("search", "--index", str(tmp_path / "idx"), "--text", "the", "--mode", "bm25",
                "--json")
    assert found.returncode == 0, found.stderr
    shown = json.loads(found.stdout)
    assert shown["hits"] == [] and shown["retrievers"] == []


def test_fifty_megabyte_single_line_is_bounded(tmp_path: Path, config: Path) -> None:
    line = b'{"id": "huge", "text": "' + b"pneumothorax " * (50 * 1024 * 1024 // 13) + b'"}\n'
    path = manifest(tmp_path, line + b'{"id": "small", "text": "small"}\n')
    started = time.perf_counter()
    # VmHWM (peak RSS of this process image; ru_maxrss would include the forked parent's)
    code = ("import re, sys; from mmedrag.cli.main import main; rc = main(sys.argv[1:]); "
            "status = open('/proc/self/status').read(); "
            "print(re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr); "
            "sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "index", str(path), "--index",
                          str(tmp_path / "idx"), "--config", str(config), "--json"],
                         capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    peak_mb = int(out.stderr.split()[-1]) / 1024
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["count"] == 1 and "line longer than" in summary["errors"][0]
    assert seconds < 60 and peak_mb < 1000, (seconds, peak_mb)
