"""The simulated lockdownd through pymobiledevice3's LockdownClient."""
from __future__ import annotations

import pytest
from pymobiledevice3.exceptions import (
    ConnectionTerminatedError,
    GetProhibitedError,
    LockdownError,
    PairingDialogResponsePendingError,
    PasswordRequiredError,
    UserDeniedPairingError,
)
from pymobiledevice3.lockdown import create_using_usbmux
from pymobiledevice3.service_connection import ServiceConnection

from hw.sim import Mode, Pairing
from hw.sim.device import LOCKDOWN_PORT

from .conftest import run, wait_until


async def connect(phone, **kwargs):
    return await create_using_usbmux(serial=phone.udid, **kwargs)


def test_identity_without_pairing(bench_for, make_phone):
    phone = make_phone(product_type="iPhone12,1", ios_version="16.7.2", build="20H115")
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=False) as lockdown:
            return lockdown.paired, lockdown.all_values, lockdown.display_name

    paired, values, name = run(scenario())

    assert not paired
    assert name == "iPhone 11"
    assert values["UniqueDeviceID"] == phone.udid == f"00008030-{phone.ecid:016X}"
    assert values["UniqueChipID"] == phone.ecid
    assert (values["ProductType"], values["ProductVersion"], values["BuildVersion"]) == ("iPhone12,1", "16.7.2", "20H115")
    assert (values["SerialNumber"], values["ActivationState"]) == (phone.serial, "Unactivated")
    assert values["DevicePublicKey"].startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    assert "ApNonce" not in values  # session-only
    assert phone.requests() == ["QueryType", "GetValue"]


def test_phone_at_setup_pairs_without_dialog_and_speaks_tls(bench_for, make_phone, pmd3_home):
    phone = make_phone(pairing=Pairing.AUTO_ACCEPT)
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=True, pair_timeout=0) as lockdown:
            return lockdown.paired, await lockdown.get_value(key="HardwareModel")

    assert run(scenario()) == (True, "D17AP")
    assert phone.requests() == ["QueryType", "GetValue", "GetValue", "Pair", "StartSession", "GetValue", "GetValue"]
    assert (pmd3_home / f"{phone.udid}.plist").is_file()


def test_trust_dialog_pending_then_accepted(bench_for, make_phone):
    phone = make_phone(pairing=Pairing.DIALOG, dialog_tries=1)
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=True, pair_timeout=5) as lockdown:
            return lockdown.paired

    assert run(scenario())
    assert phone.requests().count("Pair") == 2


def test_trust_dialog_not_answered_in_time(bench_for, make_phone):
    phone = make_phone(pairing=Pairing.DIALOG, dialog_tries=100)
    bench_for(phone)

    with pytest.raises(PairingDialogResponsePendingError):
        run(connect(phone, autopair=True, pair_timeout=0))


def test_passcode_locked_phone_needs_unlocking(bench_for, make_phone):
    phone = make_phone(pairing=Pairing.PASSCODE)
    bench_for(phone)

    with pytest.raises(PasswordRequiredError):
        run(connect(phone, autopair=True, pair_timeout=5))


def test_denied_trust(bench_for, make_phone):
    phone = make_phone(pairing=Pairing.DENIED)
    bench_for(phone)

    with pytest.raises(UserDeniedPairingError):
        run(connect(phone, autopair=True, pair_timeout=5))


def test_a_second_client_reuses_the_pair_record_from_usbmuxd(bench_for, make_phone):
    phone = make_phone(pairing=Pairing.DIALOG, dialog_tries=0)
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=True, pair_timeout=0):
            pass
        async with await connect(phone, autopair=False) as lockdown:
            return lockdown.paired

    assert run(scenario())
    assert phone.requests().count("Pair") == 1


@pytest.mark.parametrize("find_my", [True, False])
def test_find_my_in_a_paired_session(bench_for, make_phone, find_my):
    phone = make_phone(activation_state="Activated", find_my=find_my)
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=True, pair_timeout=0) as lockdown:
            return await lockdown.get_value("com.apple.fmip", "IsAssociated")

    assert run(scenario()) is find_my


def test_find_my_is_not_readable_unpaired(bench_for, make_phone):
    phone = make_phone(find_my=True)
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=False) as lockdown:
            return await lockdown.get_value("com.apple.fmip", "IsAssociated")

    with pytest.raises(GetProhibitedError):
        run(scenario())


def test_restore_values_in_session(bench_for, make_phone):
    phone = make_phone()
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=True, pair_timeout=0) as lockdown:
            return [await lockdown.get_value(key=k) for k in ("Image4Supported", "ApNonce", "SEPNonce")]

    assert run(scenario()) == [True, phone.ap_nonce, phone.sep_nonce]


def test_enter_recovery_unpaired_is_refused_even_after_pmd3_retries(bench_for, make_phone):
    phone = make_phone()
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=False) as lockdown:
            await lockdown.enter_recovery()

    with pytest.raises(LockdownError) as refused:
        run(scenario())
    assert refused.value.error == "SessionInactive"
    assert phone.requests() == ["QueryType", "GetValue", "EnterRecovery", "EnterRecovery"]
    assert phone.mode is Mode.NORMAL


def test_enter_recovery_after_pairing_is_retried_in_a_session(bench_for, make_phone):
    phone = make_phone()
    bench = bench_for(phone, reboot_seconds=0.2)

    async def scenario():
        lockdown = await connect(phone, autopair=False)
        await lockdown.pair()  # a record, but still no session on this connection
        await lockdown.enter_recovery()  # SessionInactive -> pmd3 reconnects with the record and retries

    run(scenario())

    assert phone.requests()[-5:] == ["Pair", "EnterRecovery", "StartSession", "GetValue", "EnterRecovery"]
    wait_until(lambda: getattr(bench.world.device_of(phone), "mode", None) is Mode.RECOVERY)


def test_enter_recovery_unpaired_works_before_ios_14_5(bench_for, make_phone):
    phone = make_phone(ios_version="14.4")
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=False) as lockdown:
            return await lockdown.enter_recovery()

    assert run(scenario()) == {"Request": "EnterRecovery"}
    wait_until(lambda: phone.mode is Mode.RECOVERY)


def test_malformed_requests_get_lockdown_errors_not_a_dead_daemon(bench_for, make_phone):
    phone = make_phone()
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=False) as lockdown:
            replies = [
                await lockdown.service.send_recv_plist({"Label": "test"}),
                await lockdown.service.send_recv_plist({"Request": "GetValue", "Key": 42}),
                await lockdown.service.send_recv_plist({"Request": "Pair", "PairRecord": "nope"}),
            ]
            with pytest.raises(LockdownError):
                await lockdown._request("Frobnicate")
            replies.append(await lockdown.get_value(key="ProductType"))
            return replies

    assert run(scenario()) == [
        {"Error": "InvalidRequest"},
        {"Request": "GetValue", "Key": 42, "Error": "MissingValue"},
        {"Request": "Pair", "Error": "MissingPairRecord"},
        phone.product_type,
    ]


def test_a_frame_that_is_not_a_plist_drops_only_that_connection(bench_for, make_phone):
    phone = make_phone()
    bench_for(phone)

    async def scenario():
        async with await connect(phone, autopair=False) as lockdown:
            await lockdown.service.sendall(b"\x00\x00\x00\x05hello")
            with pytest.raises(ConnectionTerminatedError):
                await lockdown.service.recv_plist()
        async with await connect(phone, autopair=False) as lockdown:
            return await lockdown.query_type()

    assert run(scenario()) == "com.apple.mobile.lockdown"


def test_a_connection_dropped_during_the_tls_handshake_ends_quietly(bench_for, make_phone, caplog):
    # usbmuxd stopping (or a cable pulled) right after StartSession's reply drops the connection
    # while the phone waits for the host's ClientHello. asyncio's start_tls then returns None
    # (cpython #105993): the phone must take that as the connection gone, not crash its daemon.
    phone = make_phone(pairing=Pairing.AUTO_ACCEPT)
    bench = bench_for(phone)

    async def start_session_then_stop_usbmuxd():
        async with await connect(phone, autopair=True, pair_timeout=0) as lockdown:
            host_id, buid = lockdown.pair_record["HostID"], lockdown.system_buid
        service = await ServiceConnection.create_using_usbmux(phone.udid, LOCKDOWN_PORT)
        try:
            await service.send_plist({"Label": "test", "Request": "StartSession", "HostID": host_id,
                                      "SystemBUID": buid})
            assert (await service.recv_plist())["EnableSessionSSL"]
            bench.usbmuxd.stop()
        finally:
            await service.close()

    run(start_session_then_stop_usbmuxd())
    bench.usbmuxd.start()

    async def query_type():
        async with await connect(phone, autopair=False) as lockdown:
            return await lockdown.query_type()

    assert run(query_type()) == "com.apple.mobile.lockdown"
    assert not [r for r in caplog.records if r.exc_info or "Unhandled" in r.getMessage()], caplog.text
