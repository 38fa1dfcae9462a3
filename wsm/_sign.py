"""The bundle's signature: `SHA256SUMS.sig`, an ECDSA P-256 signature over SHA256SUMS.

SHA256SUMS lists every file of the bundle (the lock among them), so one signature over it covers the whole
bundle. The file is what `cosign sign-blob --key` writes for a key pair (`--output-signature`): the base64 of
an ASN.1 DER ECDSA signature over the SHA-256 of the blob. So `cosign verify-blob --key PUB --signature
SHA256SUMS.sig SHA256SUMS` and `openssl dgst -sha256 -verify PUB -signature <(base64 -d SHA256SUMS.sig)
SHA256SUMS` check it too. Keys are plain PEM (PKCS#8 or SEC1, as openssl writes them, optionally encrypted
with a password); cosign's own encrypted key format is not read.

Signing needs the `cryptography` package. Checking uses it when it can be imported, else `openssl dgst`: the
bundle's tools/wsm.pyz carries no compiled modules, so on the offline side `openssl` does the arithmetic.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ._bundle import SIG_FILE, BundleDir, read_checksums_file, read_regular_file
from ._exceptions import SignatureError
from ._files import write_atomically

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

MAX_KEY_BYTES = 64 * 1024
MAX_SIGNATURE_BYTES = 4 * 1024  # a DER P-256 signature is at most 72 bytes; its base64 under 100


def sign_bundle(root: Path, key: Path, password: bytes | None = None) -> Path:
    """Write `<root>/SHA256SUMS.sig` over the bundle's SHA256SUMS with the private key in `key`."""
    directory = BundleDir(root)
    private_key = load_private_key(key, password)
    signature = sign_data(read_checksums_file(directory.sums_path), private_key)
    write_atomically(directory.root / SIG_FILE, base64.b64encode(signature))
    return directory.root / SIG_FILE


def load_private_key(key: Path, password: bytes | None = None) -> EllipticCurvePrivateKey:
    """The EC P-256 private key of a PEM file (checked before a long download starts)."""
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = read_key_file(key, "private key")
    try:
        private_key = serialization.load_pem_private_key(data, password=password)
    except TypeError as error:  # encrypted without a password, or a password for a plain key
        raise SignatureError(f"private key {key}: {error}", path=key) from None
    except ValueError as error:
        raise SignatureError(f"private key {key} is not a PEM private key wsm can read ({error}); give an EC P-256 "
                             "key as openssl writes it (openssl ecparam -name prime256v1 -genkey)", path=key) from None
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
        raise SignatureError(f"private key {key} is not an EC P-256 key (cosign's kind); make one with openssl "
                             "ecparam -name prime256v1 -genkey", path=key)
    return private_key


def sign_data(data: bytes, private_key: EllipticCurvePrivateKey) -> bytes:
    """The DER ECDSA-SHA256 signature of `data`."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return private_key.sign(data, ec.ECDSA(hashes.SHA256()))


def check_signature(root: Path, sums: bytes, public_key: Path) -> None:
    """Check `<root>/SHA256SUMS.sig` over `sums` (SHA256SUMS as read once by the caller) with `public_key`.

    Raises SignatureError, naming the file, when the signature is missing, malformed or does not verify.
    """
    path = Path(root) / SIG_FILE
    if not path.exists():
        raise SignatureError(f"{path} is missing: the bundle is not signed; sign it on the connected side "
                             "(wsm sign), or copy the whole bundle", path=path)
    signature = _decoded(path, read_regular_file(path, MAX_SIGNATURE_BYTES))
    key = read_key_file(public_key, "public key")
    if not _verifies(key, public_key, signature, sums):
        raise SignatureError(f"{path} does not verify SHA256SUMS with public key {public_key}: the bundle was changed "
                             "after it was signed, or signed with another key; copy it again", path=path)


def read_key_file(path: Path, kind: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_BYTES + 1)
    except OSError as error:
        raise SignatureError(f"{kind} {path}: unreadable ({error.strerror})", path=path) from None
    if len(data) > MAX_KEY_BYTES or b"-----BEGIN" not in data:
        raise SignatureError(f"{kind} {path} is not a PEM file", path=path)
    return data


def _decoded(path: Path, text: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{path} is not a base64 signature (as cosign sign-blob writes); copy it again",
                             path=path) from None


def _verifies(key: bytes, key_path: Path, signature: bytes, data: bytes) -> bool:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError:  # the bundle's wsm.pyz: no compiled modules
        return _openssl_verifies(key_path, signature, data)
    try:
        public = serialization.load_pem_public_key(key)
    except ValueError as error:
        raise SignatureError(f"public key {key_path} is not a PEM public key ({error})", path=key_path) from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SignatureError(f"public key {key_path} is not an EC key (cosign's kind)", path=key_path)
    try:
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _openssl_verifies(key_path: Path, signature: bytes, data: bytes) -> bool:
    """`openssl dgst -sha256 -verify`, for a wsm without the `cryptography` package."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SignatureError("checking a signature needs the Python package cryptography or the openssl command; "
                             "install one of them", path=key_path)
    with tempfile.TemporaryDirectory(prefix="wsm-sig-") as work:
        signature_file, data_file = Path(work, "sig"), Path(work, "data")
        signature_file.write_bytes(signature)
        data_file.write_bytes(data)  # the bytes already read and checked, not the file again
        result = subprocess.run(
            [openssl, "dgst", "-sha256", "-verify", os.fspath(key_path), "-signature", os.fspath(signature_file),
             os.fspath(data_file)], capture_output=True, text=True, check=False,
        )
    if result.returncode != 0 and "Verification failure" not in result.stdout + result.stderr:
        detail = (result.stderr.strip().splitlines() or ["openssl failed"])[0]
        raise SignatureError(f"public key {key_path}: openssl could not check the signature ({detail})", path=key_path)
    return result.returncode == 0


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise SignatureError("signing needs the Python package cryptography (pip install cryptography); this wsm "
                             "has none (the bundle's wsm.pyz carries no compiled modules)") from None
