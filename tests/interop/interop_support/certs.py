"""A private certificate authority and a server certificate for the tests.

The suite makes its own CA and signs a certificate for the XMPP domain with
it. The server gets the certificate (with the CA appended, as a full chain)
and the key; the clients trust only that CA, so TLS verification stays on,
hostname check included.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca

[dn]
CN = zkfire interop test CA

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class CertificateSet:
    ca_cert: Path  # what clients trust
    cert: Path  # server certificate followed by the CA certificate
    key: Path  # server private key (PKCS#8 PEM)
    leaf_cert: Path  # server certificate alone
    domain: str


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed (scripts/test installs it)")
    result = subprocess.run(
        [openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def make_certificates(directory: Path, domain: str) -> CertificateSet:
    """Create a CA and a certificate for `domain` (and its subdomains) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.cnf").write_text(CA_CONFIG)
    san = f"DNS:{domain}, DNS:*.{domain}"
    (directory / "leaf.ext").write_text(LEAF_EXTENSIONS.format(san=san))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-config", "ca.cnf", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "30", cwd=directory,
    )
    _openssl(
        "req", "-new", *ec, "-keyout", "key.pem", "-out", "leaf.csr",
        "-subj", f"/CN={domain}", cwd=directory,
    )
    _openssl(
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "leaf.pem", "-days", "30",
        "-extfile", "leaf.ext", cwd=directory,
    )
    leaf = (directory / "leaf.pem").read_text()
    ca = (directory / "ca.pem").read_text()
    (directory / "cert.pem").write_text(leaf + ca)
    for name in ("key.pem", "ca.key"):
        (directory / name).chmod(0o600)
    return CertificateSet(
        ca_cert=directory / "ca.pem",
        cert=directory / "cert.pem",
        key=directory / "key.pem",
        leaf_cert=directory / "leaf.pem",
        domain=domain,
    )
