"""Report signatures: canonical form, verification, and every kind of tampering."""

from __future__ import annotations

import base64
import copy
import json
import os

import pytest

from drbackup.codec import keys
from drbackup.drill.report import read_report_file, render_markdown, write_report_file
from drbackup.drill.signing import (
    canonical_json,
    load_signing_key,
    public_bytes,
    sign_report,
    trusted_key,
    verify_report,
)
from drbackup.errors import CheckFailedError, UsageError
from tests.unit.drill.test_report import sample_report


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "signing.key"
    path.write_text(keys.b64(os.urandom(32)) + "\n")  # as `drbackup key generate` writes it
    return path


@pytest.fixture
def signed(key_file):
    return sign_report(sample_report(), load_signing_key(key_file))


def trusted(key_file) -> bytes:
    return public_bytes(load_signing_key(key_file))


def test_canonical_json_is_sorted_compact_utf8_without_the_signature():
    report = {"b": 1, "a": {"d": [1, 2], "c": "Ünïcode ☃"}, "signature": {"x": 1}}
    assert canonical_json(report) == '{"a":{"c":"Ünïcode ☃","d":[1,2]},"b":1}'.encode()


def test_a_signed_report_verifies(signed, key_file):
    sig = signed["signature"]
    assert sig["algorithm"] == "ed25519"
    assert base64.b64decode(sig["public_key"]) == trusted(key_file)
    assert verify_report(signed, trusted(key_file)).key_id == sig["key_id"]
    # and after a JSON round trip, as an auditor reads it from a file
    assert verify_report(json.loads(json.dumps(signed, indent=2)), trusted(key_file))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r["checks"][1].update(status="pass"),
        lambda r: r["checks"][1].update(summary="all good"),
        lambda r: r.update(status="pass"),
        lambda r: r["targets"][0]["timings"].update(total_s=1.0),
        lambda r: r["checks"].pop(),
        lambda r: r.update(extra="added"),
    ],
)
def test_any_change_after_signing_is_detected(signed, key_file, tamper):
    tampered = copy.deepcopy(signed)
    tamper(tampered)
    with pytest.raises(CheckFailedError) as info:
        verify_report(tampered, trusted(key_file))
    assert info.value.message == "bad signature: the report was changed after it was signed"
    assert info.value.exit_code == 3


def test_a_report_re_signed_with_another_key_is_refused(signed, key_file, tmp_path):
    other = tmp_path / "other.key"
    other.write_text(keys.b64(os.urandom(32)))
    forged = sign_report({**signed, "status": "pass"}, load_signing_key(other))
    with pytest.raises(CheckFailedError, match="report was signed by key [0-9a-f]{16}, not by"):
        verify_report(forged, trusted(key_file))


def test_unsigned_and_malformed_signatures(signed, key_file):
    unsigned = {k: v for k, v in signed.items() if k != "signature"}
    with pytest.raises(CheckFailedError, match="^report is not signed$"):
        verify_report(unsigned, trusted(key_file))
    broken = {**signed, "signature": {**signed["signature"], "value": "not base64!"}}
    with pytest.raises(CheckFailedError, match="signature is malformed"):
        verify_report(broken, trusted(key_file))


def test_markdown_reports_carry_the_signed_json(signed, key_file, tmp_path):
    path = write_report_file(signed, tmp_path / "drill.md", "markdown")
    text = path.read_text()
    assert text.startswith("# Drill report 20261123T020000Z-a1b2c3")
    assert read_report_file(path) == signed
    assert verify_report(read_report_file(path), trusted(key_file))
    path.write_text(text.replace('"status": "fail"', '"status": "pass"', 1))
    with pytest.raises(CheckFailedError, match="bad signature"):
        verify_report(read_report_file(path), trusted(key_file))
    assert render_markdown(signed).count("```json drbackup-drill-report") == 1


def test_trusted_key_sources(key_file):
    public = trusted(key_file)
    assert trusted_key(base64.b64encode(public).decode(), None, None) == public
    assert trusted_key(None, key_file, None) == public
    assert trusted_key(None, None, key_file) == public
    with pytest.raises(UsageError, match="no public key to verify with"):
        trusted_key(None, None, None)
    with pytest.raises(UsageError, match="32 bytes"):
        trusted_key(base64.b64encode(b"short").decode(), None, None)
