"""When a restore may start on a shared USB link (station.bus): the times it learns, the room it sees."""
from __future__ import annotations

from hw.phones import Mode
from hw.worker import phases
from station.bus import Link, TransferWatch

PI4 = Link("pi4", rate=40e6, phone_rate=35e6)  # two transfers fill it: one alone takes 35 of 40


def sending(percent: float) -> float:
    """The whole restore's percentage (what the station is told) with its transfer ``percent`` done."""
    return phases.overall_percent(Mode.NORMAL, phases.RESTORE_IMAGE, percent)


def test_a_link_fills_with_as_many_transfers_as_it_takes_to_exceed_one_phone():
    assert PI4.fills_with == 2
    assert Link("fast", rate=35e6, phone_rate=35e6).fills_with == 1
    assert Link("pi5-hub", rate=100e6, phone_rate=35e6).fills_with == 3


def test_restores_start_until_the_link_is_filled_then_wait_and_say_why():
    watch = TransferWatch()
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=0.0) == ""
    watch.started(1, Mode.NORMAL, now=0.0)
    # Nothing learned yet of how long a restore takes to reach the link: no reason to hold one.
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=0.0) == ""
    watch.started(2, Mode.NORMAL, now=0.0)
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=0.0) == "WAIT USB: link pi4 busy (0 sending, 2 on the way)"
    # A phone behind another link is not held up by this one.
    assert watch.wait_reason(Link("other", 40e6, 35e6), [4, 5], Mode.NORMAL, now=0.0) == ""


def test_restores_reach_a_link_one_at_a_time():
    watch = TransferWatch()
    watch.started(1, Mode.NORMAL, now=0.0)
    watch.progress(1, phases.RESTORE_IMAGE, sending(0.0), now=50.0)  # 50 s to reach the link
    watch.ended(1)
    watch.started(2, Mode.NORMAL, now=60.0)
    # Two on their way together would reach the link together and end together, and the link
    # would carry nothing from their end to the next ones' arrival: the third waits.
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=70.0) == "WAIT USB: link pi4 busy (0 sending, 1 on the way)"
    watch.progress(2, phases.RESTORE_IMAGE, sending(0.0), now=110.0)
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=110.0) == ""


def test_a_link_with_room_to_spare_takes_restores_as_they_come():
    """Staggering matters only for the restore that fills the link: until then another can start
    whenever a phone is ready (bench.soak, 21 slots on one ample link: admitted one per lead, the
    queue grew to 11 s and phones were unplugged mid-restore)."""
    roomy = Link("roomy", rate=4 * 35e6, phone_rate=35e6)  # four transfers fill it
    watch = TransferWatch()
    watch.started(9, Mode.NORMAL, now=0.0)
    watch.progress(9, phases.RESTORE_IMAGE, sending(0.0), now=50.0)  # 50 s to reach the link
    watch.ended(9)
    watch.started(1, Mode.NORMAL, now=60.0)
    watch.started(2, Mode.NORMAL, now=61.0)
    assert watch.wait_reason(roomy, [1, 2, 3, 4], Mode.NORMAL, now=62.0) == ""
    watch.started(3, Mode.NORMAL, now=62.0)
    # The fourth would fill it: it waits until those on their way have reached the link.
    assert watch.wait_reason(roomy, [1, 2, 3, 4], Mode.NORMAL, now=63.0) == \
        "WAIT USB: link roomy busy (0 sending, 3 on the way)"
    for slot in (1, 2, 3):
        watch.progress(slot, phases.RESTORE_IMAGE, sending(0.0), now=112.0)
    assert watch.wait_reason(roomy, [1, 2, 3, 4], Mode.NORMAL, now=112.0) == ""


def test_a_restore_slow_to_reach_the_link_holds_the_others_up_for_a_while_only():
    watch = TransferWatch()
    watch.started(1, Mode.NORMAL, now=0.0)
    watch.progress(1, phases.RESTORE_IMAGE, sending(0.0), now=50.0)
    watch.ended(1)
    watch.started(2, Mode.NORMAL, now=100.0)  # a phone slow to enter recovery
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=150.0).startswith("WAIT USB")
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=201.0) == ""


def test_the_low_traffic_phases_after_a_transfer_do_not_hold_the_link():
    watch = TransferWatch()
    for slot in (1, 2):
        watch.started(slot, Mode.NORMAL, now=0.0)
        watch.progress(slot, phases.VERIFY_RESTORE, 10.0, now=300.0)
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=300.0) == ""


def test_one_more_starts_when_a_transfer_ends_within_the_time_a_restore_takes_to_reach_its_own():
    watch = TransferWatch()
    for slot in (1, 2):
        watch.started(slot, Mode.NORMAL, now=0.0)
        watch.progress(slot, phases.ENTER_RECOVERY, 0.0, now=0.0)
        watch.progress(slot, phases.RESTORE_IMAGE, sending(0.0), now=50.0)  # 50 s to reach the link
    assert watch.lead_s(Mode.NORMAL) == 50.0
    watch.progress(1, phases.RESTORE_IMAGE, sending(50.0), now=250.0)  # 0.25 %/s: 200 s left
    watch.progress(2, phases.RESTORE_IMAGE, sending(40.0), now=250.0)
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=250.0).startswith("WAIT USB")
    watch.progress(1, phases.RESTORE_IMAGE, sending(92.0), now=418.0)  # 32 s left: within the lead
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=418.0) == ""
    # Only one: the next waits until that one reached the link too.
    watch.started(3, Mode.NORMAL, now=410.0)
    assert watch.wait_reason(PI4, [1, 2, 3, 4], Mode.NORMAL, now=418.0).startswith("WAIT USB")
    # It reached the link while the first is still sending (later than its pace said): the
    # second is not about to end, so no one else starts yet.
    watch.progress(3, phases.RESTORE_IMAGE, sending(0.0), now=455.0)
    watch.progress(1, phases.RESTORE_IMAGE, sending(99.0), now=455.0)
    assert watch.wait_reason(PI4, [1, 2, 3, 4], Mode.NORMAL, now=455.0).startswith("WAIT USB")


def test_a_phone_from_dfu_is_judged_by_what_dfu_restores_took():
    watch = TransferWatch()
    watch.started(1, Mode.NORMAL, now=0.0)
    watch.progress(1, phases.RESTORE_IMAGE, sending(0.0), now=50.0)
    assert watch.lead_s(Mode.DFU) is None  # nothing learned yet: no early start on a guess


def test_a_worker_slow_to_start_does_not_make_the_next_restores_start_early():
    """The first worker waited for the fork server's preload (in CI on 2026-12-03, 1 s of the
    first restore's 1.5 s lead at 300x): counted in the lead, every transfer looked about to end,
    and a third restore reached the link while two still filled it ("transfer 3 fails at 5%")."""
    watch = TransferWatch()
    for slot, start, first_report in ((1, 0.0, 40.0), (2, 1.0, 2.0)):
        watch.started(slot, Mode.NORMAL, now=start)
        watch.progress(slot, phases.ENTER_RECOVERY, 0.0, now=first_report)  # the worker runs
    watch.progress(1, phases.RESTORE_IMAGE, sending(0.0), now=90.0)  # 50 s from its worker's start
    watch.progress(2, phases.RESTORE_IMAGE, sending(0.0), now=91.0)
    assert watch.lead_s(Mode.NORMAL) == 50.0  # not 90: later workers start at once
    watch.progress(1, phases.RESTORE_IMAGE, sending(70.0), now=190.0)  # 0.7 %/s: 43 s left
    watch.progress(2, phases.RESTORE_IMAGE, sending(70.0), now=191.0)
    # Both end after a restore started now would reach the link (within 0.8 of 50 s): it waits.
    assert watch.wait_reason(PI4, [1, 2, 3], Mode.NORMAL, now=191.0).startswith("WAIT USB")
