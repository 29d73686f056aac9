"""Report signatures: canonical form, verification, and every kind of tampering."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os

import pytest

from drbackup.codec import keys
from drbackup.drill.documents import (
    signature_path,
    signer_fingerprints,
    verify_document,
    write_signed,
)
from drbackup.drill.report import (
    read_report_file,
    render_markdown,
    verify_report_file,
    write_report_file,
)
from drbackup.drill.signing import (
    KeyRing,
    canonical_json,
    fingerprint,
    key_id,
    load_signing_key,
    operator,
    public_bytes,
    public_pem,
    read_public_keys,
    sign_report,
    trusted_key,
    trusted_keys,
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


def test_the_signer_is_inside_what_is_signed(signed, key_file, monkeypatch):
    signer = signed["signer"]
    assert signer["key_fingerprint"] == fingerprint(trusted(key_file))
    assert signer["key_fingerprint"] == "ed25519:" + hashlib.sha256(trusted(key_file)).hexdigest()
    assert signer["operator"] and signer["host"] and signer["signed_at"].endswith("+00:00")
    assert b'"signer":' in canonical_json(signed)
    forged = copy.deepcopy(signed)
    forged["signer"]["operator"] = "someone else"
    with pytest.raises(CheckFailedError, match="bad signature"):
        verify_report(forged, trusted(key_file))
    monkeypatch.setenv("DRBACKUP_OPERATOR", "alice (change 4711)")
    assert operator() == "alice (change 4711)"


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("fmt", ["markdown", "json"])
def test_any_edit_of_any_byte_of_a_report_file_fails(signed, key_file, tmp_path, fmt):
    path = write_report_file(signed, tmp_path / "drill.out", fmt, load_signing_key(key_file))
    data, signature = path.read_bytes(), signature_path(path).read_bytes()
    ring = KeyRing.of([trusted(key_file)])
    assert len(signature) == 64
    assert verify_report_file(path, ring).document.key_id == key_id(trusted(key_file))
    # every byte: the table rows, the host, the times, the whitespace, the JSON block
    for index in range(len(data)):
        with pytest.raises(CheckFailedError) as info:
            verify_document("drill.out", _flip(data, index), signature, ring)
        assert info.value.exit_code == 3
    for edited in (data + b"\n", data[:-1], data.replace(b"app", b"apq", 1)):
        path.write_bytes(edited)
        with pytest.raises(CheckFailedError) as info:
            verify_report_file(path, ring)
        assert info.value.message == (
            "bad signature: the report was changed after it was signed "
            "(drill.out: its bytes do not match its detached signature)"
        )


def test_the_html_report_is_signed_byte_for_byte_too(signed, key_file, tmp_path):
    from drbackup.report.html import render_drill_report

    html = render_drill_report(signed, "html")
    key = load_signing_key(key_file)
    path = write_report_file(signed, tmp_path / "drill.html", "html", key, text=html)
    ring = KeyRing.of([trusted(key_file)])
    checked = verify_report_file(path, ring)
    assert checked.document and checked.record and checked.report == signed
    fp = signed["signer"]["key_fingerprint"]
    assert f"signed with ed25519 key <code>{fp}</code> by " in html
    data, signature = path.read_bytes(), signature_path(path).read_bytes()
    for index in range(0, len(data), 3):  # every third byte: the page is large
        with pytest.raises(CheckFailedError):
            verify_document("drill.html", _flip(data, index), signature, ring)
    path.write_bytes(data.replace(b"</h1>", b" </h1>", 1))
    with pytest.raises(CheckFailedError, match="drill.html: its bytes do not match"):
        verify_report_file(path, ring)


def test_a_markdown_report_names_its_signer_and_how_to_verify(signed, key_file, tmp_path):
    text = render_markdown(signed)
    fp = signed["signer"]["key_fingerprint"]
    assert f"signed with ed25519 key {fp} by {signed['signer']['operator']} on " in text
    assert "openssl pkeyutl -verify -pubin -inkey signer.pem -rawin -in THIS_FILE" in text
    assert signer_fingerprints(text.encode()) == [fp]


def test_a_markdown_report_without_its_signature_file_is_refused(signed, key_file, tmp_path):
    path = write_report_file(signed, tmp_path / "drill.md", "markdown", None)
    ring = KeyRing.of([trusted(key_file)])
    with pytest.raises(CheckFailedError) as info:
        verify_report_file(path, ring)
    assert info.value.message == "drill.md has no detached signature (drill.md.sig not found)"
    signature_path(path).write_bytes(b"x" * 10)
    with pytest.raises(CheckFailedError, match="not an ed25519 signature .10 bytes, 64 expected"):
        verify_report_file(path, ring)
    # a JSON record without .sig (the repository's form): its content, not its layout
    json_path = write_report_file(signed, tmp_path / "drill.json", "json", None)
    checked = verify_report_file(json_path, ring)
    assert checked.document is None and checked.record.key_id == key_id(trusted(key_file))


def test_a_rotated_key_leaves_old_reports_verifiable(signed, key_file, tmp_path):
    old = write_report_file(signed, tmp_path / "old.md", "markdown", load_signing_key(key_file))
    new_key_file = tmp_path / "new.key"
    new_key_file.write_text(keys.b64(os.urandom(32)))
    new_key = load_signing_key(new_key_file)
    new_report = sign_report(sample_report("20261124T020000Z-d4e5f6"), new_key)
    new = write_report_file(new_report, tmp_path / "new.md", "markdown", new_key)
    ring = trusted_keys([], None, new_key_file, [base64.b64encode(trusted(key_file)).decode()])
    assert verify_report_file(old, ring).key.fingerprint == signed["signer"]["key_fingerprint"]
    assert verify_report_file(new, ring).key.fingerprint == new_report["signer"]["key_fingerprint"]
    only_new = trusted_keys([], None, new_key_file)
    with pytest.raises(CheckFailedError) as info:
        verify_report_file(old, only_new)
    old_id = key_id(trusted(key_file))
    assert info.value.message == (
        f"old.md was signed by key {old_id}, not by a trusted key ({only_new.describe()})"
    )


def test_public_keys_from_pem_and_key_ring_files(key_file, tmp_path):
    public = trusted(key_file)
    other = public_bytes(load_signing_key(_new_key(tmp_path)))
    pem = tmp_path / "signer.pem"
    pem.write_text(public_pem(public))
    assert read_public_keys(str(pem)) == [public]
    assert read_public_keys(public_pem(public)) == [public]
    ring_file = tmp_path / "keys.txt"
    ring_file.write_text(
        f"# drill signing keys\n{base64.b64encode(public).decode()}\n"
        f"{base64.b64encode(other).decode()}\n"
    )
    ring = trusted_keys([str(ring_file)])
    assert ring.find(fingerprint(public)) == public and ring.find(fingerprint(other)) == other
    with pytest.raises(UsageError, match="not a valid PEM public key"):
        read_public_keys("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_any_signed_document_verifies_without_a_record(key_file, tmp_path):
    # the form the HTML report will take: a document naming its key, signed byte for byte
    key = load_signing_key(key_file)
    page = f"<html><p>signed with {fingerprint(trusted(key_file))}</p></html>".encode()
    path = write_signed(tmp_path / "drill.html", page, key)
    checked = verify_report_file(path, KeyRing.of([trusted(key_file)]))
    assert checked.report is None and checked.record is None
    assert checked.key.fingerprint == fingerprint(trusted(key_file))
    path.write_bytes(page.replace(b"<p>", b"<p> "))
    with pytest.raises(CheckFailedError, match="drill.html: its bytes do not match"):
        verify_report_file(path, KeyRing.of([trusted(key_file)]))
    with pytest.raises(UsageError, match="public key file /nonexistent/signer.pem not found"):
        read_public_keys("/nonexistent/signer.pem")


def _new_key(tmp_path):
    path = tmp_path / f"k{len(list(tmp_path.iterdir()))}.key"
    path.write_text(keys.b64(os.urandom(32)))
    return path


def test_trusted_key_sources(key_file):
    public = trusted(key_file)
    assert trusted_key(base64.b64encode(public).decode(), None, None) == public
    assert trusted_key(None, key_file, None) == public
    assert trusted_key(None, None, key_file) == public
    with pytest.raises(UsageError, match="no public key to verify with"):
        trusted_key(None, None, None)
    with pytest.raises(UsageError, match="32 bytes"):
        trusted_key(base64.b64encode(b"short").decode(), None, None)
