"""The phases of a restore, as the station shows them; shared by the real and the simulated engine.

From normal mode: enter_recovery -> send_ibec -> boot_ramdisk -> (restored) prepare_disk ->
restore_image -> verify_restore -> flash_firmware -> update_baseband -> seal_system_volume -> reboot.
From recovery the first phase is send_ibec; from DFU, send_ibss then send_ibec.
"""
from __future__ import annotations

from hw.phones import Mode

ENTER_RECOVERY = "enter_recovery"
SEND_IBSS = "send_ibss"
SEND_IBEC = "send_ibec"
BOOT_RAMDISK = "boot_ramdisk"
PREPARE_DISK = "prepare_disk"
RESTORE_IMAGE = "restore_image"
VERIFY_RESTORE = "verify_restore"
FLASH_FIRMWARE = "flash_firmware"
UPDATE_BASEBAND = "update_baseband"
SEAL_SYSTEM_VOLUME = "seal_system_volume"
REBOOT = "reboot"

_START = {
    Mode.NORMAL: (ENTER_RECOVERY, SEND_IBEC),
    Mode.RECOVERY: (SEND_IBEC,),
    Mode.DFU: (SEND_IBSS, SEND_IBEC),
}
_RESTORED = (BOOT_RAMDISK, PREPARE_DISK, RESTORE_IMAGE, VERIFY_RESTORE, FLASH_FIRMWARE,
             UPDATE_BASEBAND, SEAL_SYSTEM_VOLUME, REBOOT)

# restored's ProgressMsg operation codes (pymobiledevice3 restore/consts.py, idevicerestore restore.c).
OPERATION_PHASES = {
    11: PREPARE_DISK,  # CREATE_PARTITION_MAP
    12: PREPARE_DISK,  # CREATE_FILESYSTEM
    13: RESTORE_IMAGE,
    14: VERIFY_RESTORE,
    18: FLASH_FIRMWARE,
    19: UPDATE_BASEBAND,
    21: REBOOT,  # REBOOT_DEVICE
    77: SEAL_SYSTEM_VOLUME,  # SEALING_SYSTEM_VOLUME
}


# Until restored runs, the worker personalises the boot components whole in memory (the
# RestoreRamDisk at about 7x its size): the phases in which a restore needs its memory budget.
MEMORY_HEAVY = frozenset({ENTER_RECOVERY, SEND_IBSS, SEND_IBEC, BOOT_RAMDISK})


def sequence(mode: Mode) -> tuple[str, ...]:
    """The phases a restore starting from ``mode`` goes through, in order."""
    return _START[mode] + _RESTORED

# Seconds each phase takes on a real phone (iPhone 12-class, USB 2 at ~35 MB/s, an ~8.7 GB
# iOS 18 image): the simulated engine's pacing, and the weights of the overall percentage.
TYPICAL_SECONDS = {
    ENTER_RECOVERY: 12.0,
    SEND_IBSS: 2.0,
    SEND_IBEC: 6.0,
    BOOT_RAMDISK: 25.0,
    PREPARE_DISK: 8.0,
    RESTORE_IMAGE: 250.0,
    VERIFY_RESTORE: 45.0,
    FLASH_FIRMWARE: 20.0,
    UPDATE_BASEBAND: 35.0,
    SEAL_SYSTEM_VOLUME: 30.0,
    REBOOT: 15.0,
}


def overall_percent(mode: Mode, phase: str, percent: float) -> float:
    """How far the whole restore is, from the phase it is in and that phase's own percentage."""
    steps = sequence(mode)
    if phase not in steps:
        return 0.0
    index = steps.index(phase)
    total = sum(TYPICAL_SECONDS[p] for p in steps)
    before = sum(TYPICAL_SECONDS[p] for p in steps[:index])
    return 100.0 * (before + TYPICAL_SECONDS[phase] * min(100.0, max(0.0, percent)) / 100) / total
