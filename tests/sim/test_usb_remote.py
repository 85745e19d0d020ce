"""The simulated bus from another process: what a restore worker sees through the bridge."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import weakref

from hw.sim import Mode
from hw.sim.usb_remote import RemoteUsbBackend

from .conftest import wait_until

# Run in a child process, as a restore worker would: pymobiledevice3's IRecv over the bridge.
WORKER = textwrap.dedent("""
    import functools, json, sys
    import usb.core
    from pymobiledevice3 import irecv
    from hw.sim.usb_remote import RemoteUsbBackend
    backend = RemoteUsbBackend.from_environment()
    irecv.find = functools.partial(usb.core.find, backend=backend)
    device = irecv.IRecv(ecid=int(sys.argv[1]), timeout=5)
    found = {"mode": device.mode.name, "ecid": device.ecid, "product_type": device.product_type,
             "nonce": device.ap_nonce.hex(), "build": bytes(device.getenv("build-version") or b"").decode()}
    device.send_command("reboot")
    print(json.dumps(found))
""")


def test_a_worker_process_finds_and_drives_a_recovery_phone_through_the_bridge(bench_for, make_phone):
    phone = make_phone(mode=Mode.RECOVERY)
    bench = bench_for(phone, reboot_seconds=0.2)
    before = bench.world.device_of(phone)
    result = subprocess.run([sys.executable, "-c", WORKER, str(phone.ecid)], capture_output=True,
                            text=True, timeout=60, env={**os.environ, **bench.environment()})
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["mode"].startswith("RECOVERY_MODE") and found["ecid"] == phone.ecid
    assert found["product_type"] == phone.product_type and found["nonce"] == phone.ap_nonce.hex()
    assert found["build"]  # iBoot answered getenv through the bridge
    # "reboot" from the worker re-enumerated the phone in the station's world: a new USB address.
    wait_until(lambda: bench.world.device_of(phone) not in (None, before), timeout=5)


def test_a_process_without_the_key_is_refused(bench_for, make_phone):
    bench = bench_for(make_phone(mode=Mode.DFU))
    env = {**os.environ, **bench.environment(), "STATION_SIM_USB_KEY": "00" * 32}
    result = subprocess.run([sys.executable, "-c", WORKER, "1"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode != 0 and "AuthenticationError" in result.stderr


def test_what_a_worker_was_handed_is_let_go_when_it_disconnects(bench_for, make_phone, monkeypatch):
    # Every restore's worker enumerates and opens phones through the bridge: a bridge that kept
    # each device and handle it ever handed out kept every phone a station restored.
    bench = bench_for()
    phone = make_phone(mode=Mode.RECOVERY)
    bench.world.attach(phone)
    for key, value in bench.environment().items():
        monkeypatch.setenv(key, value)
    worker = RemoteUsbBackend.from_environment()
    for _ in range(3):
        (device,) = worker.enumerate_devices()
        worker.close_device(worker.open_device(device))
    worker._connection.close()  # the worker exits
    bench.world.detach(phone)
    gone = weakref.ref(phone)
    del phone

    wait_until(lambda: (gc.collect(), gone() is None)[1], timeout=2)
