"""cosign key pairs: the encrypted private-key format and PEM public keys.

A cosign private key file is a PEM block (`ENCRYPTED SIGSTORE PRIVATE KEY`, or the legacy
`ENCRYPTED COSIGN PRIVATE KEY`) whose body is go-securesystemslib's `encrypted` JSON:

    {"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<b64>"},
     "cipher":{"name":"nacl/secretbox","nonce":"<b64>"},"ciphertext":"<b64>"}

The secretbox key is scrypt(password, salt, N, r, p, 32); the plaintext is a PKCS#8 DER
private key (cosign rejects anything else, SEC1 included). Public keys are PEM
`PUBLIC KEY` (PKIX SubjectPublicKeyInfo), as `cosign generate-key-pair` writes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass

import nacl.exceptions
import nacl.secret
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
LEGACY_PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"
PUBLIC_PEM_TYPE = "PUBLIC KEY"

# go-securesystemslib v0.11.0 accepts exactly these (N, r, p); "standard" is what it writes.
SCRYPT_LEGACY = (32768, 8, 1)
SCRYPT_STANDARD = (65536, 8, 1)
SCRYPT_OWASP = (131072, 8, 1)
SCRYPT_ALLOWED = frozenset({SCRYPT_LEGACY, SCRYPT_STANDARD, SCRYPT_OWASP})
_SCRYPT_MAXMEM = 512 * 1024 * 1024

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


# -- PEM ------------------------------------------------------------------------------------
def pem_encode(pem_type: str, der: bytes) -> bytes:
    """Go `pem.Encode`: base64 in 64-column lines, trailing newline."""
    b64 = base64.b64encode(der).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (f"-----BEGIN {pem_type}-----\n" + "\n".join(lines)
            + f"\n-----END {pem_type}-----\n").encode()


def pem_decode(data: bytes) -> tuple[str, bytes]:
    """(type, body) of the first PEM block in `data`."""
    text = data.decode("ascii", errors="strict").strip()
    lines = [line.strip() for line in text.splitlines()]
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN "))
    except StopIteration:
        raise ValueError("no PEM block found") from None
    pem_type = lines[start][len("-----BEGIN "):].rstrip("-").strip()
    end_marker = f"-----END {pem_type}-----"
    try:
        end = lines.index(end_marker, start + 1)
    except ValueError:
        raise ValueError(f"PEM block {pem_type!r} is not terminated") from None
    body = "".join(line for line in lines[start + 1 : end] if ":" not in line)
    try:
        return pem_type, base64.b64decode(body, validate=True)
    except ValueError as e:
        raise ValueError(f"PEM block {pem_type!r} is not valid base64") from e


# -- the encrypted box (go-securesystemslib `encrypted`) -----------------------------------------
def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=_SCRYPT_MAXMEM)


def encrypt_box(plaintext: bytes, password: bytes,
                params: tuple[int, int, int] = SCRYPT_STANDARD) -> bytes:
    """Seal `plaintext` the way go-securesystemslib's `encrypted.Encrypt` does."""
    if params not in SCRYPT_ALLOWED:
        raise ValueError(f"unsupported scrypt parameters {params}")
    salt = os.urandom(32)
    nonce = os.urandom(nacl.secret.SecretBox.NONCE_SIZE)
    n, r, p = params
    box = nacl.secret.SecretBox(_scrypt(password, salt, n, r, p))
    ciphertext = box.encrypt(plaintext, nonce).ciphertext  # Poly1305 tag + encrypted bytes

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    doc = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)},
        "ciphertext": b64(ciphertext),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decrypt_box(data: bytes, password: bytes) -> bytes:
    """Open a go-securesystemslib `encrypted` JSON box; ValueError on any failure."""
    try:
        doc = json.loads(data)
        kdf, cipher = doc["kdf"], doc["cipher"]
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        if kdf["name"] != "scrypt":
            raise ValueError(f"unsupported key derivation {kdf['name']!r}")
        if cipher["name"] != "nacl/secretbox":
            raise ValueError(f"unsupported cipher {cipher['name']!r}")
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        ciphertext = base64.b64decode(doc["ciphertext"], validate=True)
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError("not an encrypted key box") from e
    if (n, r, p) not in SCRYPT_ALLOWED:  # checked before scrypt runs, as sslib does
        raise ValueError(f"unsupported scrypt parameters N={n} r={r} p={p}")
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise ValueError("bad secretbox nonce length")
    box = nacl.secret.SecretBox(_scrypt(password, salt, n, r, p))
    try:
        return box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError as e:
        raise ValueError("decryption failed: wrong password or corrupt key") from e


# -- private keys ------------------------------------------------------------------------------
def _der_element(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def is_pkcs8(der: bytes) -> bool:
    """PKCS#8 is SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key, ... };
    SEC1 has an OCTET STRING where PKCS#8 has the algorithm SEQUENCE."""
    try:
        tag, start, end = _der_element(der, 0)
        if tag != 0x30 or end != len(der):
            return False
        tag, _s, after_version = _der_element(der, start)
        if tag != 0x02:
            return False
        tag, _s, _e = _der_element(der, after_version)
        return tag == 0x30
    except ValueError:
        return False


def _check_private(key: object) -> PrivateKey:
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return key
    raise ValueError(f"unsupported private key type {type(key).__name__} (ECDSA or RSA only)")


def load_private_key(pem: bytes, password: bytes) -> PrivateKey:
    """Load a cosign encrypted private key, exactly as strict as cosign's LoadPrivateKey."""
    pem_type, body = pem_decode(pem)
    if pem_type not in (PEM_TYPE, LEGACY_PEM_TYPE):
        raise ValueError(f"unsupported PEM type {pem_type!r} (want {PEM_TYPE})")
    der = decrypt_box(body, password)
    if not is_pkcs8(der):
        raise ValueError("parsing private key: not PKCS#8 (SEC1 and PKCS#1 are rejected)")
    return _check_private(serialization.load_der_private_key(der, password=None))


def encrypt_private_key(key: PrivateKey, password: bytes,
                        params: tuple[int, int, int] = SCRYPT_STANDARD) -> bytes:
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem_encode(PEM_TYPE, encrypt_box(der, password, params))


# -- public keys ---------------------------------------------------------------------------------
def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(pem: bytes) -> PublicKey:
    pem_type, _body = pem_decode(pem)
    if pem_type != PUBLIC_PEM_TYPE:
        raise ValueError(f"unsupported PEM type {pem_type!r} (want {PUBLIC_PEM_TYPE})")
    key = serialization.load_pem_public_key(pem)
    if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return key
    raise ValueError(f"unsupported public key type {type(key).__name__} (ECDSA or RSA only)")


def key_id(key: PublicKey) -> str:
    """A stable fingerprint: sha256 of the SubjectPublicKeyInfo DER (as Rekor's logID)."""
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, slots=True)
class GeneratedKeyPair:
    private_pem: bytes
    public_pem: bytes
    key_id: str


def generate_key_pair(password: bytes) -> GeneratedKeyPair:
    """A new ECDSA P-256 pair, as `cosign generate-key-pair` makes (N=65536)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return GeneratedKeyPair(encrypt_private_key(key, password), public_pem(key.public_key()),
                            key_id(key.public_key()))
