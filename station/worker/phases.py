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


def sequence(mode: Mode) -> tuple[str, ...]:
    """The phases a restore starting from ``mode`` goes through, in order."""
    return _START[mode] + _RESTORED
