"""``sigops run --log-format json``: one JSON object per line, names as fields."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from sigops.runtime.logs import JsonFormatter, configure


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            info = sys.exc_info()
    r = logging.LogRecord("sigops.keyrotation", logging.INFO, __file__, 1, msg, args, info)
    for k, v in extra.items():
        setattr(r, k, v)
    return r


def test_a_line_is_one_json_object_with_the_fields_given() -> None:
    line = JsonFormatter().format(record("keyrotation %s: %s", "ns/r", "Staged\nnext",
                                         rotation="ns/r", phase="Staged", other="dropped"))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "keyrotation ns/r: Staged\nnext"
    assert (doc["rotation"], doc["phase"], doc["logger"], doc["level"]) == (
        "ns/r", "Staged", "sigops.keyrotation", "INFO")
    assert doc["time"].endswith("Z") and "other" not in doc


def test_kopf_object_refs_and_errors() -> None:
    doc = json.loads(JsonFormatter().format(record(
        "handler failed", exc=True,
        k8s_ref={"kind": "KeyRotation", "namespace": "n", "name": "r", "uid": "u"})))
    assert doc["object"] == {"kind": "KeyRotation", "namespace": "n", "name": "r"}
    assert "RuntimeError: boom" in doc["error"]


def test_configure_refuses_unknown_formats(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="text or json"):
        configure("yaml")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure("json")
        logging.getLogger("sigops.test").warning("hello %d", 1, extra={"incident": "n/i"})
        doc = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (doc["message"], doc["incident"], doc["level"]) == ("hello 1", "n/i", "WARNING")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
