"""One host key for every phone the station pairs with (hw.iphone.host_key), through
pymobiledevice3's own pairing against simulated phones."""
from __future__ import annotations

import plistlib
import stat
import threading

from cryptography.hazmat.primitives import serialization

from hw.iphone import host_key as host_key_module
from hw.iphone.host_key import FILE_NAME
from hw.phones import Lock

from .harness import phone, running_layer
from .test_quirks import check


def public_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


async def test_every_phone_is_paired_with_the_stations_one_key(tmp_path, monkeypatch):
    monkeypatch.setattr(host_key_module, "_loaded", {})
    sims = [phone(), phone()]
    async with running_layer(tmp_path, monkeypatch) as h:
        for slot, sim in enumerate(sims, 1):
            assert (await check(h, sim, slot)).lock is Lock.CLEAR  # a Hello-screen phone: paired
        folder = h.layer.pairing_dir
    key_file = folder / FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    records = [plistlib.loads((folder / f"{sim.udid}.plist").read_bytes()) for sim in sims]
    assert {public_pem(r["HostPrivateKey"]) for r in records} == {public_pem(key_file.read_bytes())}


async def test_a_key_file_that_is_not_a_key_is_replaced_and_pairing_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(host_key_module, "_loaded", {})
    async with running_layer(tmp_path, monkeypatch) as h:
        key_file = h.layer.pairing_dir / FILE_NAME
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\ncut short by a power failure")
        assert (await check(h, phone(), 1)).lock is Lock.CLEAR
    assert "not a usable key" in caplog.text
    assert serialization.load_pem_private_key(key_file.read_bytes(), password=None).key_size == 2048


async def test_pairing_does_not_hold_the_event_loop(tmp_path, monkeypatch):
    """pymobiledevice3 makes each pairing's root key synchronously (ca.py); on a Pi 4 an RSA-2048
    key takes a good part of a second. The loop (buttons, the display, other phones) must keep
    running meanwhile: no key of the station's is made on the loop's thread.

    Asserted on the thread rather than on a measured lag: a lag bound failed in CI (0.45 s) on a
    machine running three test processes, where the process itself can be held that long."""
    from pymobiledevice3 import ca
    monkeypatch.setattr(host_key_module, "_loaded", {})
    real = ca.rsa.generate_private_key
    made_on: list[threading.Thread] = []

    def noting_the_thread(*args, **kwargs):
        made_on.append(threading.current_thread())
        return real(*args, **kwargs)
    monkeypatch.setattr(ca.rsa, "generate_private_key", noting_the_thread)
    sim = phone()
    assert sim.private_key.key_size == 2048  # the simulated phone's own key, made here so that only the station's are noted
    made_on.clear()
    async with running_layer(tmp_path, monkeypatch) as h:
        assert (await check(h, sim, 1)).lock is Lock.CLEAR
    assert len(made_on) == 2, made_on  # the station's host key and pymobiledevice3's root key
    assert threading.current_thread() not in made_on
