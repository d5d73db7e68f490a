"""What does DKIM signing cost per message?

Signs a 4 KB and a 200 KB message with the relay's Signer (dkimpy
canonicalisation and hashing, the RSA step in OpenSSL), RSA-2048 alone and
RSA-2048 plus Ed25519, and, for scale, times one bare RSA-2048 signature with the
``cryptography`` library (OpenSSL) in the same run.

    .venv/bin/python bench/signing.py [--runs 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

from relay.delivery.dkim_sign import Signer, generate_ed25519_key, generate_rsa_key  # noqa: E402


def message(size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Shop <abc@marketplace.example.com>"
    msg["To"] = "buyer@example.net"
    msg["Subject"] = "Your order"
    msg.set_content("A line of text about the order and its delivery.\n" * (size // 50))
    return msg.as_bytes().replace(b"\n", b"\r\n")


def median_ms(fn: object, runs: int) -> float:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - began)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rsa_path, ed_path = Path(tmp) / "relay.key", Path(tmp) / "relay.ed25519"
        generate_rsa_key(rsa_path)
        generate_ed25519_key(ed_path)
        rsa_only = Signer.load(
            domain="marketplace.example.com",
            selector="relay",
            private_key=rsa_path,
            ed25519_key=None,
        )
        dual = Signer.load(
            domain="marketplace.example.com",
            selector="relay",
            private_key=rsa_path,
            ed25519_key=ed_path,
        )
        key = serialization.load_pem_private_key(rsa_path.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
    openssl = median_ms(lambda: key.sign(b"x" * 32, padding.PKCS1v15(), hashes.SHA256()), args.runs)
    print(f"median of {args.runs} runs, ms per message")
    print(f"{'message':<10} {'RSA':>13} {'RSA+Ed25519':>12} {'OpenSSL RSA sign':>17}")
    for name, size in (("4 KB", 4_000), ("200 KB", 200_000)):
        data = message(size)
        one = median_ms(lambda data=data: rsa_only.sign(data), args.runs)
        two = median_ms(lambda data=data: dual.sign(data), args.runs)
        print(f"{name:<10} {one:>13.2f} {two:>12.2f} {openssl:>17.2f}")


if __name__ == "__main__":
    main()
