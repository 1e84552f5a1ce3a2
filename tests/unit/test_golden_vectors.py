"""The project's own golden vectors (tests/golden): all pass, and any one-byte change fails."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sigops import cli
from sigops.core.diagnose import CAUSE_NAMES
from sigops.core.golden import run_golden

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VECTORS = sorted(p.name for p in GOLDEN.glob("*.json") if not p.name.startswith("keyring"))


def golden(capsys: pytest.CaptureFixture[str], directory: Path) -> tuple[int, dict[str, Any]]:
    rc = cli.main(["golden", str(directory)])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, json.loads(cap.out)


def test_all_vectors_pass(capsys: pytest.CaptureFixture[str]) -> None:
    rc, report = golden(capsys, GOLDEN)
    assert rc == 0
    assert report["failed"] == 0
    assert report["total"] == report["passed"] == len(VECTORS)
    assert all(v["ok"] for v in report["vectors"])


def test_sigops_golden_command() -> None:
    p = subprocess.run([sys.executable, "-m", "sigops.cli", "golden", str(GOLDEN)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["failed"] == 0


def test_vectors_cover_every_profile_alg_and_cause() -> None:
    results = {r.file: r for r in run_golden(GOLDEN)}
    for profile in ("python", "go", "fixed9"):
        assert results[f"canonical_{profile}_edge.json"].ok
        for alg in ("hmac", "ed25519"):
            r = results[f"pcs_{profile}_{alg}.json"]
            # Each signed vector verifies under exactly its own profile: they pin the forms.
            assert r.ok and r.profiles == (profile,)
    causes = set()
    for name in VECTORS:
        if name.startswith("verdict_"):
            causes.add(json.loads((GOLDEN / name).read_text())["expect"]["cause"])
    assert causes == set(CAUSE_NAMES)


def test_vectors_are_reproducible(tmp_path: Path) -> None:
    script = GOLDEN / "make_vectors.py"
    p = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    made = sorted(x.name for x in tmp_path.glob("*.json"))
    assert made == sorted(x.name for x in GOLDEN.glob("*.json"))
    for name in made:
        assert (tmp_path / name).read_bytes() == (GOLDEN / name).read_bytes(), name


def mutation_offset(name: str, data: bytes) -> int:
    """The byte to change: a hex digit of merkle_root (signed content), or for vectors whose
    expected cause would survive that, a letter of the expected cause."""
    doc = json.loads(data)
    if name.startswith("verdict_") and doc["expect"]["cause"] in ("tampered", "malformed"):
        return data.index(b'"cause": "') + len(b'"cause": "')
    if name.startswith("canonical_"):
        # Change the payload itself, just after "D_hat": -- the first value.
        return data.index(b'"expected_payload": "') + len(b'"expected_payload": "{\\"D_hat\\":')
    return data.index(b'"merkle_root": "') + len(b'"merkle_root": "')


@pytest.mark.parametrize("name", VECTORS)
def test_one_changed_byte_makes_golden_fail(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            name: str) -> None:
    copy = tmp_path / "golden"
    shutil.copytree(GOLDEN, copy)
    data = bytearray((copy / name).read_bytes())
    i = mutation_offset(name, bytes(data))
    data[i] = ord("7") if data[i] != ord("7") else ord("8")
    (copy / name).write_bytes(bytes(data))
    rc, report = golden(capsys, copy)
    assert rc == 1
    failed = [v["file"] for v in report["vectors"] if not v["ok"]]
    assert failed == [name]


def test_changed_keyring_fails_the_signed_vectors(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    copy = tmp_path / "golden"
    shutil.copytree(GOLDEN, copy)
    kr = json.loads((copy / "keyring.json").read_text())
    kr["keys"][0]["secret"] = kr["keys"][0]["secret"][:-1] + "X"
    (copy / "keyring.json").write_text(json.dumps(kr))
    rc, report = golden(capsys, copy)
    assert rc == 1
    failed = {v["file"] for v in report["vectors"] if not v["ok"]}
    assert failed == {f"pcs_{p}_hmac.json" for p in ("python", "go", "fixed9")}


def test_garbage_file_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    copy = tmp_path / "golden"
    shutil.copytree(GOLDEN, copy)
    (copy / "zz_garbage.json").write_text('{"a": 1, "a": 2}')
    (copy / "zz_unknown.json").write_text('{"a": 1}')
    rc, report = golden(capsys, copy)
    assert rc == 1
    assert {v["file"] for v in report["vectors"] if not v["ok"]} == {
        "zz_garbage.json", "zz_unknown.json"}
