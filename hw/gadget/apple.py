"""Apple's servers inside the gadget phones' VM, reached by their real names and ports.

The station in the VM runs its Pi backend unchanged: it asks ``https://albert.apple.com`` and
``http://gs.apple.com`` as on a shop's network. The VM's /etc/hosts names 127.0.0.1 for both
(``image/hil.py`` writes it), and the station's unit there trusts this run's own certificate
authority (``REQUESTS_CA_BUNDLE``, read by requests). Nothing in the station is pointed anywhere.
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hw.sim.activation_server import ActivationServer
from hw.sim.tss_server import TssServer
from hw.sim.world import SimWorld

ACTIVATION_NAME = "albert.apple.com"  # pymobiledevice3 mobile_activation.ACTIVATION_DEFAULT_URL
SIGNING_NAME = "gs.apple.com"  # the station's default [restore] signing_url


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path) -> ssl.SSLContext:
    """A throw-away CA (written to ``directory/ca.pem``) and a TLS context for Apple's names."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("station HIL test CA")).issuer_name(_name("station HIL test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(ACTIVATION_NAME), x509.DNSName(SIGNING_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = (x509.CertificateBuilder().subject_name(_name(ACTIVATION_NAME)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = directory / "server.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return context


def apple_servers(world: SimWorld, pki: Path) -> tuple[ActivationServer, TssServer]:
    """Apple's activation server on 443 (TLS) and signing server on 80, on loopback."""
    return (ActivationServer(world, "127.0.0.1", 443, make_pki(pki)), TssServer(host="127.0.0.1", port=80))
