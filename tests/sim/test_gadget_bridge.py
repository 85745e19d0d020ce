"""A gadget phone's connection, bridged from usbmuxd's TCP emulation to its simulated lockdownd.

Found by `make hil`: through the real usbmuxd, every StartSession failed (libimobiledevice:
"SSL error (-5)"; the simulated lockdownd: "Cannot create a client socket with a
PROTOCOL_TLS_SERVER context"), because the bridge's end was a stream from a connect(), which
asyncio's start_tls takes for a TLS client. Here pymobiledevice3 pairs and starts its TLS
session over the bridge alone, as it would over usbmuxd.
"""
from __future__ import annotations

from pymobiledevice3.lockdown import TcpLockdownClient
from pymobiledevice3.service_connection import ServiceConnection

from hw.gadget.bus import bridge
from hw.sim import SimWorld, phone_named
from hw.sim.device import LOCKDOWN_PORT, SimDevice
from hw.sim.loop import BackgroundLoop


async def test_lockdownd_over_the_bridge_pairs_and_starts_its_tls_session(tmp_path):
    world = SimWorld()
    phone = phone_named("bridged")
    device = SimDevice(world.attach(phone, 1, (1,)), world)
    daemons = BackgroundLoop("bridge-test")
    daemons.start()
    try:
        service = await ServiceConnection.from_socket(bridge(device, device.handler(LOCKDOWN_PORT), daemons))
        # hostname: where a TCP lockdown client would reconnect; nothing listens there, so a
        # failed session cannot be papered over by a second connection.
        lockdown = await TcpLockdownClient.create(service, identifier=phone.udid, hostname="127.0.0.1",
                                                  port=9, pairing_records_cache_folder=tmp_path)
        try:
            assert lockdown.paired and lockdown.session_id
            assert await lockdown.get_value(key="ProductVersion") == phone.ios_version  # read over TLS
        finally:
            await lockdown.close()
    finally:
        daemons.stop()
