"""The simulated TSS server against pymobiledevice3's own TSS client and IMG4 stitching."""
from __future__ import annotations

import hashlib
import plistlib
import threading
import types
from pathlib import Path
from typing import Any

import pytest
import requests
from ipsw_parser.ipsw import IPSW
from pyimg4 import IM4M
from pymobiledevice3.exceptions import TSSError
from pymobiledevice3.restore import tss
from pymobiledevice3.restore.base_restore import Behavior
from pymobiledevice3.restore.device import Device
from pymobiledevice3.restore.img4 import stitch_component
from pymobiledevice3.restore.recovery import Recovery
from pymobiledevice3.restore.tss import TSSRequest, TSSResponse

from hw.sim.firmware import COMPONENT_NAMES, build_ipsw
from hw.sim.tss_server import TssServer, point_tss_at, verify_personalized, verify_ticket

BUILD, VERSION = "21F90", "17.5.1"
NOT_ELIGIBLE = "This device isn't eligible for the requested build."


@pytest.fixture(scope="module")
def ipsws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ipsw")
    return {
        "iPhone14,7": build_ipsw(folder / "a.ipsw", "iPhone14,7", VERSION, BUILD, os_size=1 << 20),
        "iPhone13,2+3": build_ipsw(folder / "b.ipsw", ("iPhone13,2", "iPhone13,3"), VERSION, BUILD, os_size=1 << 20),
        "iPhone10,3": build_ipsw(folder / "c.ipsw", "iPhone10,3", "16.7.8", "20H343", os_size=1 << 20),
    }


@pytest.fixture
def server(ipsws: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    with TssServer() as tss_server:
        for path in ipsws.values():
            tss_server.add_ipsw(path)
        monkeypatch.setattr(tss, "TSS_CONTROLLER_ACTION_URL", tss_server.url)  # point_tss_at, undone after
        yield tss_server


def device(hardware_model: str, ecid: int = 0x1A2B3C4D5E6F, image4: bool = True) -> Device:
    """pmd3's Device over an irecv stand-in: what a phone in DFU tells Recovery.get_tss_response."""
    irecv = types.SimpleNamespace(ecid=ecid, hardware_model=hardware_model, is_image4_supported=image4,
                                  ap_nonce=hashlib.sha256(b"apnonce%d" % ecid).digest(),
                                  sep_nonce=hashlib.sha1(b"sepnonce%d" % ecid).digest())
    return Device(irecv=irecv)  # type: ignore[arg-type]


async def ap_request(recovery: Recovery) -> TSSRequest:
    """The request Recovery.get_tss_response sends (DFU phone: no baseband), to be altered."""
    parameters: dict[str, Any] = {"ApECID": await recovery.device.get_ecid(),
                                  "ApNonce": await recovery.device.get_ap_nonce(),
                                  "ApSepNonce": await recovery.device.get_sep_nonce(),
                                  "ApProductionMode": True, "ApSecurityMode": True, "ApSupportsImg4": True}
    recovery.populate_tss_request_from_manifest(parameters)
    request = TSSRequest()
    request.add_common_tags(parameters)
    request.add_ap_tags(parameters)
    request.add_ap_img4_tags(parameters)
    return request


@pytest.mark.parametrize("behavior", [Behavior.Erase, Behavior.Update])
async def test_a_signed_build_gets_a_ticket_every_component_of_the_ipsw_is_stitched_with(
        server: TssServer, ipsws: dict[str, Path], behavior: Behavior) -> None:
    phone = device("d27ap")
    recovery = Recovery(IPSW.create_from_path(str(ipsws["iPhone14,7"])), phone, behavior=behavior)
    response = await recovery.get_tss_response()

    ticket = IM4M(response.ap_img4_ticket)
    assert (ticket.ecid, ticket.chip_id, ticket.board_id) == (0x1A2B3C4D5E6F, 0x8110, 0x18)
    assert ticket.apnonce == await phone.get_ap_nonce() and ticket.sepnonce == await phone.get_sep_nonce()
    assert ticket.signature and ticket.certificates
    assert {"SEP-TBM", "RestoreSEP-TBM"} <= set(response)  # TBMDigests in the request (A15)
    stitched = set()
    for name in COMPONENT_NAMES:
        if name == "OS":  # not personalised: ASR streams it as it is
            continue
        img4 = await recovery.get_personalized_data(name, tss=response)  # pmd3's img4.stitch_component
        stitched.add(verify_personalized(img4, 0x1A2B3C4D5E6F, await phone.get_ap_nonce()))
    assert {"ibss", "ibec", "rdsk", "rkrn", "rdtr", "rsep", "rlgo", "rtsc", "illb", "ibot", "sepi"} <= stitched
    assert server.seen[-1].status == 0 and server.seen[-1].build == BUILD


async def test_the_answer_is_apples_format(server: TssServer, ipsws: dict[str, Path]) -> None:
    recovery = Recovery(IPSW.create_from_path(str(ipsws["iPhone14,7"])), device("d27ap"), behavior=Behavior.Erase)
    request = await ap_request(recovery)
    answer = requests.post(server.url, data=plistlib.dumps(request.tags()), timeout=10,
                           headers={"Content-type": 'text/xml; charset="utf-8"', "User-Agent": "InetURL/1.0"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/html"
    # libtatsu (tss.c tss_request_send) looks for "MESSAGE=SUCCESS", then parses from "<?xml"
    assert answer.content.startswith(b"STATUS=0&MESSAGE=SUCCESS&REQUEST_STRING=<?xml")
    assert requests.post(server.url.replace("action=2", "action=3"), data=b"", timeout=10).status_code == 404


async def test_an_unsigned_build_is_refused_with_apples_status_94(ipsws: dict[str, Path],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with TssServer(unsigned={(BUILD, "iPhone14,7")}) as server:
        server.add_ipsw(ipsws["iPhone14,7"])
        point_tss_at(server.url)
        try:
            recovery = Recovery(IPSW.create_from_path(str(ipsws["iPhone14,7"])), device("d27ap"))
            with pytest.raises(TSSError, match=NOT_ELIGIBLE):
                await recovery.get_tss_response()
            answer = requests.post(server.url, data=plistlib.dumps((await ap_request(recovery)).tags()), timeout=10)
            assert answer.content == b"STATUS=94&MESSAGE=" + NOT_ELIGIBLE.encode()
            server.set_signed(BUILD, "iPhone14,7", True)  # Apple signs it again
            assert (await recovery.get_tss_response()).ap_img4_ticket
        finally:
            point_tss_at(None)
    assert tss.TSS_CONTROLLER_ACTION_URL == "http://gs.apple.com/TSS/controller?action=2"


async def test_unsigned_is_per_product_type_within_one_ipsw(ipsws: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with TssServer(unsigned={(BUILD, "iPhone13,3")}) as server:
        server.add_ipsw(ipsws["iPhone13,2+3"])
        monkeypatch.setattr(tss, "TSS_CONTROLLER_ACTION_URL", server.url)
        ipsw = IPSW.create_from_path(str(ipsws["iPhone13,2+3"]))
        assert (await Recovery(ipsw, device("d53gap")).get_tss_response()).ap_img4_ticket  # iPhone13,2
        with pytest.raises(TSSError, match=NOT_ELIGIBLE):
            await Recovery(ipsw, device("d53pap")).get_tss_response()  # iPhone13,3
    assert [(s.product_type, s.status) for s in server.seen] == [("iPhone13,2", 0), ("iPhone13,3", 94)]


async def test_a_build_apple_never_made_is_not_eligible(server: TssServer, ipsws: dict[str, Path],
                                                        tmp_path: Path) -> None:
    other = build_ipsw(tmp_path / "x.ipsw", "iPhone14,7", VERSION, "21F91", os_size=4096)  # never add_ipsw'd
    with pytest.raises(TSSError, match=NOT_ELIGIBLE):
        await Recovery(IPSW.create_from_path(str(other)), device("d27ap")).get_tss_response()
    recovery = Recovery(IPSW.create_from_path(str(ipsws["iPhone14,7"])), device("d27ap"))
    request = await ap_request(recovery)
    request.update({"iBSS": {**request.tags()["iBSS"], "Digest": bytes(48)}})  # a patched iBSS
    with pytest.raises(TSSError, match=NOT_ELIGIBLE):
        await request.send_receive()


def _drop(key: str):
    return lambda request: request.remove_key(key)


def _set(key: str, value: Any):
    return lambda request: request.update({key: value})


@pytest.mark.parametrize("change", [
    _drop("ApNonce"), _set("ApNonce", b"short"), _set("ApECID", "0x1A2B"), _drop("ApChipID"),
    lambda request: (request.remove_key("@ApImg4Ticket"), request.remove_key("@BBTicket")),
    _set("ApSecurityDomain", True), _set("SepNonce", "text"),
    lambda request: request.update({"iBSS": {"Trusted": True, "EPRO": True, "ESEC": True}}),  # no Digest
], ids=["no ApNonce", "short ApNonce", "ECID string", "no ApChipID", "no ticket asked", "bool domain",
        "SepNonce string", "no digest"])
async def test_a_malformed_request_is_refused_as_apple_does(server: TssServer, ipsws: dict[str, Path],
                                                            change: Any) -> None:
    recovery = Recovery(IPSW.create_from_path(str(ipsws["iPhone14,7"])), device("d27ap"))
    request = await ap_request(recovery)
    change(request)
    with pytest.raises(TSSError, match="An internal error occurred."):
        await request.send_receive()
    assert server.seen[-1].status == 100


def test_garbage_is_refused_with_a_status(server: TssServer) -> None:
    for body in (b"", b"not a plist", plistlib.dumps(["a list"])):
        answer = requests.post(server.url, data=body, timeout=10)
        assert answer.content == b"STATUS=100&MESSAGE=An internal error occurred."


async def test_no_tbm_entries_for_a_chip_whose_manifest_has_no_tbm_digests(server: TssServer,
                                                                            ipsws: dict[str, Path]) -> None:
    phone = device("d22ap")  # iPhone10,3, A11 (0x8015): no TBMDigests in the real 19E241 manifest either
    recovery = Recovery(IPSW.create_from_path(str(ipsws["iPhone10,3"])), phone, behavior=Behavior.Erase)
    response = await recovery.get_tss_response()
    assert set(response) == {"ApImg4Ticket"}
    img4 = await recovery.get_personalized_data("RestoreSEP", tss=response)
    assert verify_personalized(img4, await phone.get_ecid(), await phone.get_ap_nonce()) == "rsep"


async def test_a_baseband_request_gets_a_bbticket_and_blobs(server: TssServer) -> None:
    request = TSSRequest()
    bbfw = {"Info": {"Path": "Firmware/x.bbfw"}, "Misc-PartialDigest": bytes(20)}
    parameters = {"ApECID": 0x1A2B3C4D5E6F, "BbChipID": 0x1F30E1, "BbGoldCertId": 0x26F3FACC,
                  "BbSNUM": b"\x01\x02\x03\x04", "BbNonce": bytes(20), "Manifest": {"BasebandFirmware": bbfw}}
    request.add_common_tags(parameters)
    request.add_baseband_tags(parameters)
    response = await request.send_receive()
    assert isinstance(response.bb_ticket, bytes) and set(response["BasebandFirmware"]) == {"Misc-Blob"}


async def test_tickets_are_checked_like_a_phone_would(server: TssServer, ipsws: dict[str, Path]) -> None:
    phone = device("d27ap")
    recovery = Recovery(IPSW.create_from_path(str(ipsws["iPhone14,7"])), phone, behavior=Behavior.Erase)
    response = await recovery.get_tss_response()
    ticket = response.ap_img4_ticket
    assert verify_ticket(ticket).ecid == await phone.get_ecid()
    forged = bytearray(ticket)
    forged[ticket.index(b"ECID") + 8] ^= 1  # inside the signed body
    with pytest.raises(ValueError, match="signature"):
        verify_ticket(bytes(forged))
    img4 = await recovery.get_personalized_data("iBSS", tss=response)
    with pytest.raises(ValueError, match="ECID"):
        verify_personalized(img4, 1, await phone.get_ap_nonce())
    with pytest.raises(ValueError, match="ApNonce"):
        verify_personalized(img4, await phone.get_ecid(), bytes(32))
    ipsw = IPSW.create_from_path(str(ipsws["iPhone14,7"]))
    other_image = stitch_component("iBSS", ipsw.read("Firmware/dfu/iBEC.d27.RELEASE.im4p"), TSSResponse(response),
                                   recovery.build_identity, {})  # iBEC's bytes typed as iBSS
    with pytest.raises(ValueError, match="not the one the ticket signed"):
        verify_personalized(other_image, await phone.get_ecid(), await phone.get_ap_nonce())


def test_stop_leaves_no_thread() -> None:
    server = TssServer()
    server.start()
    url = server.url
    server.stop()
    assert not [t for t in threading.enumerate() if t.name == "sim-tss"]
    with pytest.raises(requests.ConnectionError):
        requests.post(url, data=b"", timeout=2)
    with pytest.raises(RuntimeError):
        server.url


def test_what_the_server_remembers_is_bounded() -> None:
    # Each restore asks for two tickets or more: a list of every request grew with each phone.
    server = TssServer()
    for _ in range(2_000):
        server.answer(b"not a plist")
    assert len(server.seen) < 1_000 and server.seen[-1].status == 100  # the latest, for tests
