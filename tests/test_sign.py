"""`wsm sign` / `wsm verify --key` / `wsm download --sign-key`: SHA256SUMS.sig as cosign sign-blob writes it
(base64 of a DER ECDSA P-256 signature over SHA256SUMS), checked by openssl, and openssl's signatures checked
by wsm; any change to a file of the bundle (SHA256SUMS recomputed) fails verification."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from charts import package, write_chart
from images import make_image
from support import DEBIAN_PYTHON, one_line_error, run_tool, wsm

SIG = "SHA256SUMS.sig"


def openssl(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, input=stdin)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """An EC P-256 key pair as openssl makes it (SEC1 private key), another pair, and an RSA key."""
    work = tmp_path_factory.mktemp("keys")
    for name in ("key", "other"):
        assert openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.pem", cwd=work).returncode == 0
        assert openssl("ec", "-in", f"{name}.pem", "-pubout", "-out", f"{name}.pub", cwd=work).returncode == 0
    assert openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem",
                   cwd=work).returncode == 0
    return {name: work / name for name in ("key.pem", "key.pub", "other.pem", "other.pub", "rsa.pem")}


@pytest.fixture(scope="module")
def signed(registry, keys, tmp_path_factory) -> Path:
    """A bundle of one chart and one image, downloaded with --sign-key."""
    work = tmp_path_factory.mktemp("signed")
    make_image(registry, "sign/app", work, tag="1.0")
    chart = write_chart(work / "src" / "demo", {"apiVersion": "v2", "name": "demo", "version": "1.0.0"},
                        {"image": {"repository": f"{registry.host}/sign/app", "tag": "1.0"}})
    bundle = work / "bundle"
    result = wsm("download", "--chart", str(package(chart, work / "pkg")), "--bundle", str(bundle), "--plain-http",
                 "--sign-key", str(keys["key.pem"]), cwd=work)
    assert result.returncode == 0, result.stderr
    return bundle


def copied(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


def openssl_verifies(bundle: Path, public: Path) -> subprocess.CompletedProcess[bytes]:
    raw = base64.b64decode((bundle / SIG).read_bytes())
    (bundle.parent / "sig.der").write_bytes(raw)
    return openssl("dgst", "-sha256", "-verify", str(public), "-signature", str(bundle.parent / "sig.der"),
                   "SHA256SUMS", cwd=bundle)


def test_download_signs_and_openssl_checks_it(signed, keys):
    assert (signed / SIG).exists()
    checked = openssl_verifies(signed, keys["key.pub"])
    assert checked.returncode == 0 and b"Verified OK" in checked.stdout, checked.stderr
    assert openssl_verifies(signed, keys["other.pub"]).returncode != 0
    assert b"PRIVATE" not in b"".join(path.read_bytes() for path in signed.rglob("*") if path.is_file()
                                      and path.suffix != ".pyz")


def test_verify_key_accepts_the_signature_and_does_not_list_it_as_unlisted(signed, keys):
    result = wsm("verify", str(signed), "--key", str(keys["key.pub"]))
    assert result.returncode == 0, result.stderr
    assert "signature SHA256SUMS.sig verifies" in result.stdout
    assert SIG not in result.stdout.replace("signature SHA256SUMS.sig verifies", "")
    assert SIG not in (signed / "SHA256SUMS").read_text()


def test_a_signature_made_by_openssl_is_checked_by_wsm(signed, keys, tmp_path):
    bundle = copied(signed, tmp_path)
    made = openssl("dgst", "-sha256", "-sign", str(keys["other.pem"]), "SHA256SUMS", cwd=bundle)
    assert made.returncode == 0, made.stderr
    (bundle / SIG).write_bytes(base64.b64encode(made.stdout) + b"\n")
    assert wsm("verify", str(bundle), "--key", str(keys["other.pub"])).returncode == 0
    one_line_error(wsm("verify", str(bundle), "--key", str(keys["key.pub"])), SIG, "does not verify")


def test_wsm_sign_writes_what_openssl_checks(signed, keys, tmp_path):
    bundle = copied(signed, tmp_path)
    result = wsm("sign", str(bundle), "--key", str(keys["other.pem"]))
    assert result.returncode == 0, result.stderr
    assert openssl_verifies(bundle, keys["other.pub"]).returncode == 0


def test_a_one_byte_change_in_a_tarball_fails_verify_key(signed, keys, tmp_path):
    bundle = copied(signed, tmp_path)
    tarball = next((bundle / "images").glob("*.tar"))
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 1
    tarball.write_bytes(bytes(data))
    sums = subprocess.run("sha256sum $(cut -c67- SHA256SUMS)", shell=True, cwd=bundle, capture_output=True)
    (bundle / "SHA256SUMS").write_bytes(sums.stdout)
    one_line_error(wsm("verify", str(bundle), "--key", str(keys["key.pub"])), SIG, "does not verify")


def test_a_missing_signature_or_a_bad_key_is_one_line(signed, keys, tmp_path):
    bundle = copied(signed, tmp_path)
    (bundle / SIG).unlink()
    one_line_error(wsm("verify", str(bundle), "--key", str(keys["key.pub"])), SIG, "missing")
    one_line_error(wsm("sign", str(bundle), "--key", str(keys["rsa.pem"])), "rsa.pem", "P-256")
    one_line_error(wsm("sign", str(bundle), "--key", str(tmp_path / "nothing.pem")), "nothing.pem")


def test_an_encrypted_pkcs8_key_signs_with_its_password(signed, keys, tmp_path):
    bundle = copied(signed, tmp_path)
    encrypted = tmp_path / "enc.pem"
    made = openssl("pkcs8", "-topk8", "-in", str(keys["key.pem"]), "-out", str(encrypted), "-passout", "pass:s3cret",
                   cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    one_line_error(wsm("sign", str(bundle), "--key", str(encrypted)), "enc.pem")
    assert wsm("sign", str(bundle), "--key", str(encrypted), "--key-password-stdin", stdin="s3cret\n").returncode == 0
    assert wsm("verify", str(bundle), "--key", str(keys["key.pub"])).returncode == 0


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="needs Debian's python3")
def test_the_bundles_tool_checks_the_signature_with_openssl(signed, keys, tmp_path):
    """tools/wsm.pyz carries no cryptography (compiled); with -I -S nothing else is importable: openssl checks."""
    bundle = copied(signed, tmp_path)
    pyz = bundle / "tools" / "wsm.pyz"
    result = run_tool(DEBIAN_PYTHON, pyz, "verify", str(bundle), "--key", str(keys["key.pub"]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "signature SHA256SUMS.sig verifies" in result.stdout
    (bundle / SIG).write_bytes(base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01"))
    failed = run_tool(DEBIAN_PYTHON, pyz, "verify", str(bundle), "--key", str(keys["key.pub"]), cwd=tmp_path)
    one_line_error(failed, SIG, "does not verify")
