"""The IPSW cache directory: add, list, verify, remove, prune, and the choice of firmware for a phone.

Layout of ``[ipsw] cache_dir``::

    NAME.ipsw               complete and verified (or accepted with --trust-unlisted)
    NAME.ipsw.verify.json   its verification record (record.py)
    .NAME.ipsw.part         an add in progress, or a download to resume
    catalog.json            published sizes and digests (catalog.py)

A file gets its final name only after it was copied, fsynced and verified, so a
crash or a bad input leaves the cache as it was (apart from a resumable part).
"""
from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.config import IpswSection
from station.ipsw import catalog as catalogs
from station.ipsw import models
from station.ipsw import record as records
from station.ipsw.digest import Digests, file_digests
from station.ipsw.errors import IpswError, NoIpswError
from station.ipsw.files import fsync_dir
from station.ipsw.manifest import Identity, Manifest, read_manifest
from station.ipsw.record import Record
from station.ipsw.transfer import DownloadInterrupted, Progress, copy_file, download

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.json"
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class Entry:
    """One cached IPSW and what is known of it."""

    path: Path
    size: int
    record: Record | None
    current: bool  # the record matches the file's size and mtime

    @property
    def usable(self) -> bool:
        return self.current and self.record is not None and self.record.usable

    @property
    def state(self) -> str:
        if self.record is None:
            return "unverified"
        if not self.current:
            return "changed (verify again)"
        return {"verified": "verified", "unlisted": "unlisted (trusted)"}.get(
            self.record.state, f"failed: {self.record.reason}")

    def as_json(self) -> dict[str, Any]:
        known = self.record if self.current else None
        return {"file": self.path.name, "path": str(self.path), "size": self.size, "state": self.state,
                "build": known.build if known else None, "version": known.version if known else None,
                "models": list(known.models) if known else [],
                "sha1": known.sha1 if known else None, "sha256": known.sha256 if known else None,
                "checked_at": known.checked_at if known else None}


@dataclass(frozen=True)
class Selection:
    """The firmware a phone gets: the file and the build identity inside it."""

    path: Path
    build: str
    version: str
    sha256: str
    model: str  # the ProductType (or CPID:BDID) it was chosen for
    identity_index: int
    device_class: str
    variant: str
    restore_behavior: str

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "file": self.path.name, "path": str(self.path), "build": self.build,
                "version": self.version, "sha256": self.sha256,
                "identity": {"index": self.identity_index, "DeviceClass": self.device_class,
                             "Variant": self.variant, "RestoreBehavior": self.restore_behavior}}


class IpswCache:
    def __init__(self, section: IpswSection) -> None:
        self.section = section
        self.dir = section.cache_dir
        self._manifests: dict[tuple[Path, int, int], Manifest] = {}

    # -- reading ------------------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        if not self.dir.is_dir():
            return []
        return [self._entry(path) for path in sorted(self.dir.glob("*.ipsw"))]

    def find(self, name: str) -> Entry:
        """A cached IPSW by file name (or a path to it in the cache)."""
        path = self.dir / Path(name).name
        if path.suffix != ".ipsw" or not path.is_file():
            raise IpswError(f"{Path(name).name}: not in the cache ({self.dir})")
        return self._entry(path)

    def catalog(self) -> catalogs.Catalog:
        return catalogs.load(self.dir / CATALOG_FILE)

    def manifest(self, path: Path) -> Manifest:
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key not in self._manifests:
            self._manifests[key] = read_manifest(path)
        return self._manifests[key]

    # -- catalog ------------------------------------------------------------------------------------

    def refresh_catalog(self, wanted: tuple[str, ...] = ()) -> tuple[catalogs.Catalog, dict[str, str]]:
        """Fetch the catalog for ``wanted`` (default: [ipsw] models, else every station iPhone) and save it.

        Returns it with the failure of each model that could not be fetched; IpswError when none could.
        """
        wanted = wanted or self.section.models or models.station_models()
        fresh, failures = catalogs.refresh(self.catalog(), self.section.catalog_url, wanted,
                                           self.section.download_timeout_s)
        if len(failures) == len(wanted):
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise IpswError(f"catalog not refreshed: {next(iter(failures.values()))}{more}")
        self._make_dir()
        catalogs.save(fresh, self.dir / CATALOG_FILE)
        for failure in failures.values():
            log.warning("catalog fetch failed: %s", failure)
        return fresh, failures

    # -- changing -----------------------------------------------------------------------------------

    def add(self, source: str, trust_unlisted: bool = False, progress: Progress | None = None) -> Entry:
        """Copy a file or download a URL into the cache, verified; IpswError leaves the cache unchanged."""
        is_url = source.startswith(("http://", "https://"))
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(source).path) if is_url else source).name
        if not name.endswith(".ipsw"):
            raise IpswError(f"{name or source}: not an .ipsw file name")
        final = self.dir / name
        if final.exists():
            raise IpswError(f"{name} is already in the cache (station ipsw verify {name} checks it again)")
        if not is_url:
            self._check_source(Path(source))  # fail in a second, not after copying 8 GB
        self._make_dir()
        part = self.dir / f".{name}{PART_SUFFIX}"
        try:
            if is_url:
                digests = download(source, part, self.section.download_timeout_s, self.section.download_retries,
                                   progress)
            else:
                digests = copy_file(Path(source), part, progress)
            manifest = read_manifest(part)
            verdict = self._judge(name, part.stat(), manifest, digests, trust_unlisted, previous=None)
            if not verdict.usable:
                raise IpswError(verdict.reason)
            records.save(final, verdict)  # the record first: the IPSW never shows up unverified
            os.rename(part, final)
            fsync_dir(self.dir)
        except BaseException as error:
            # A broken download stays to be resumed; anything else (bad file, disk full) goes.
            if not (is_url and isinstance(error, (DownloadInterrupted, KeyboardInterrupt))):
                part.unlink(missing_ok=True)
                part.with_name(part.name + ".json").unlink(missing_ok=True)
            if not final.exists():
                records.path_for(final).unlink(missing_ok=True)
            raise
        log.info("added %s: iOS %s (%s) for %s, %s", name, manifest.version, manifest.build,
                 ", ".join(manifest.product_types), verdict.state)
        return self._entry(final)

    def verify(self, name: str, trust_unlisted: bool = False, progress: Progress | None = None) -> Entry:
        """Hash a cached IPSW again and store the result; IpswError (stored too) when it fails."""
        entry = self.find(name)
        stat = entry.path.stat()
        manifest = self.manifest(entry.path)
        try:
            digests = file_digests(entry.path, (lambda done: progress(done, stat.st_size)) if progress else None)
        except OSError as error:
            raise IpswError(f"{entry.path.name}: read error: {error.strerror or error}") from None
        if entry.path.stat().st_mtime_ns != stat.st_mtime_ns:
            raise IpswError(f"{entry.path.name}: changed while it was being verified")
        verdict = self._judge(entry.path.name, stat, manifest, digests, trust_unlisted, previous=entry.record)
        records.save(entry.path, verdict)
        log.info("verified %s: %s", entry.path.name, verdict.state)
        if not verdict.usable:
            raise IpswError(verdict.reason)
        return self._entry(entry.path)

    def remove(self, name: str) -> Path:
        entry = self.find(name)
        entry.path.unlink()
        records.path_for(entry.path).unlink(missing_ok=True)
        fsync_dir(self.dir)
        log.info("removed %s", entry.path.name)
        return entry.path

    def prune(self, keep: int, dry_run: bool = False) -> list[Path]:
        """Remove usable IPSWs that are not among the ``keep`` newest (or pinned) for any of their models."""
        ranked = sorted(((e, self.manifest(e.path)) for e in self.entries() if e.usable),
                        key=lambda pair: _release(pair[1]), reverse=True)
        kept: set[Path] = set()
        for model in {m for _, manifest in ranked for m in manifest.product_types}:
            supporting = [(e, m) for e, m in ranked if model in m.product_types]
            kept.update(e.path for e, _ in supporting[:keep])
            pin = self.section.pin.get(model)
            kept.update(e.path for e, m in supporting if pin in (m.version, m.build))
        doomed = [e.path for e, _ in ranked if e.path not in kept]
        if not dry_run:
            for path in doomed:
                self.remove(path.name)
        return doomed

    # -- choosing -----------------------------------------------------------------------------------

    def select(self, product_type: str | None = None, chip_id: int | None = None,
               board_id: int | None = None) -> Selection:
        """The IPSW and Erase build identity for a phone: the newest usable one, or the pinned version.

        A phone in normal mode is known by ProductType, one in recovery/DFU by chip id +
        board id. A file whose record is stale is verified again (hashed) before use.
        """
        model, boards = self._boards(product_type, chip_id, board_id)
        pin = self.section.pin.get(model)
        candidates: list[tuple[Entry, Manifest, Identity]] = []
        for entry in self.entries():
            if entry.current and not entry.usable:
                continue  # known bad; `station ipsw verify` after fixing it
            try:
                manifest = self.manifest(entry.path)
            except (IpswError, OSError) as error:
                log.warning("skipping %s: %s", entry.path.name, error)
                continue
            identity = self._identity(manifest, boards, product_type)
            if identity and (pin is None or pin in (manifest.version, manifest.build)):
                candidates.append((entry, manifest, identity))
        for entry, manifest, identity in sorted(candidates, key=lambda c: _release(c[1]), reverse=True):
            if not entry.usable:
                log.info("%s changed since it was verified: verifying before use", entry.path.name)
                try:
                    entry = self.verify(entry.path.name)
                except IpswError as error:
                    log.warning("not using %s: %s", entry.path.name, error)
                    continue
            assert entry.record is not None
            return Selection(path=entry.path, build=manifest.build, version=manifest.version,
                             sha256=entry.record.sha256, model=model, identity_index=identity.index,
                             device_class=identity.device_class, variant=identity.variant,
                             restore_behavior=identity.restore_behavior or "")
        raise NoIpswError(model, self._what_to_add(model, pin))

    # -- helpers ------------------------------------------------------------------------------------

    def _entry(self, path: Path) -> Entry:
        stat = path.stat()
        found = records.load(path)
        return Entry(path, stat.st_size, found, found is not None and found.is_current(stat))

    def _make_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise IpswError(f"cannot create the cache directory {self.dir}: {error.strerror}") from None

    def _check_source(self, source: Path) -> None:
        try:
            with source.open("rb"):
                pass
        except OSError as error:
            raise IpswError(f"{source}: {error.strerror or error}") from None
        self._check_models(source.name, read_manifest(source))

    @staticmethod
    def _check_models(name: str, manifest: Manifest) -> None:
        if not any(models.is_iphone(m) for m in manifest.product_types):
            raise IpswError(f"{name}: its BuildManifest is for {', '.join(manifest.product_types) or 'no model'}, "
                            f"not an iPhone this station restores")

    def _judge(self, name: str, stat: os.stat_result, manifest: Manifest, digests: Digests,
               trust_unlisted: bool, previous: Record | None) -> Record:
        """The verification record of a hashed file: verified, unlisted (trusted) or failed with a reason."""
        self._check_models(name, manifest)
        catalog = self.catalog()
        if catalog.by_sha1(digests.sha1) is None and not catalog.for_build(manifest.build, manifest.product_types):
            catalog = self._try_refresh(manifest.product_types, catalog)
        published = catalog.by_sha1(digests.sha1)
        listed = catalog.for_build(manifest.build, manifest.product_types)
        what = f"iOS {manifest.version} ({manifest.build}) for {', '.join(manifest.product_types)}"

        def verdict(state: records.State, reason: str) -> Record:
            return Record(state=state, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                          checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
                          build=manifest.build, version=manifest.version, models=manifest.product_types,
                          sha1=digests.sha1, sha256=digests.sha256, reason=reason)

        if published is not None:
            if published.sha256 and published.sha256 != digests.sha256 or published.size != digests.size:
                return verdict("failed", f"{name}: SHA-1 matches {published.file_name} but its "
                                         f"{'SHA-256' if published.size == digests.size else 'size'} does not")
            if published.build != manifest.build or not set(published.models) <= set(manifest.product_types):
                return verdict("failed", f"{name}: its BuildManifest says {what}, but the catalog publishes "
                                         f"this file as {published.build} for {', '.join(published.models)}")
            return verdict("verified", f"matches {published.file_name}, "
                                       f"{catalog.fetched_text(manifest.product_types)}")
        if listed:
            expected = next((e for e in listed if e.file_name == name), listed[0])
            if expected.size != digests.size:
                return verdict("failed", f"{name}: size {digests.size} bytes, published {expected.size} "
                                         f"for {expected.file_name} (truncated or wrong file)")
            return verdict("failed", f"{name}: wrong digest: SHA-1 {digests.sha1}, published "
                                     f"{expected.sha1} for {expected.file_name}")
        trusted = previous is not None and previous.state == "unlisted" and previous.sha256 == digests.sha256
        if trust_unlisted or trusted:
            return verdict("unlisted", "not in the catalog, accepted with --trust-unlisted")
        return verdict("failed", f"{name}: {what} is not in the catalog "
                                 f"({catalog.fetched_text(manifest.product_types)}); "
                                 f"add --trust-unlisted to accept it anyway")

    def _try_refresh(self, wanted: tuple[str, ...], catalog: catalogs.Catalog) -> catalogs.Catalog:
        """The catalog fetched again for ``wanted`` when online; the saved copy when not."""
        try:
            return self.refresh_catalog(tuple(m for m in wanted if models.is_iphone(m)))[0]
        except IpswError as error:
            log.warning("%s; using the saved copy", error)
            return catalog

    def _boards(self, product_type: str | None, chip_id: int | None,
                board_id: int | None) -> tuple[str, tuple[models.Board, ...]]:
        if chip_id is not None and board_id is not None:
            board = models.board_at(chip_id, board_id)
            label = product_type or (board.product_type if board else f"{chip_id:04X}:{board_id:02X}")
            if board is None:
                raise NoIpswError(label, f"CPID {chip_id:04X} BDID {board_id:02X} is not in the device table")
            if product_type and board.product_type != product_type:
                raise IpswError(f"CPID {chip_id:04X} BDID {board_id:02X} is a {board.product_type}, "
                                f"not a {product_type}")
            return label, (board,)
        if product_type is None:
            raise IpswError("select needs a ProductType or a chip id and board id")
        boards = models.boards_for(product_type)
        if not boards:
            raise NoIpswError(product_type, f"{product_type} is not in the device table")
        return product_type, boards

    @staticmethod
    def _identity(manifest: Manifest, boards: tuple[models.Board, ...], product_type: str | None) -> Identity | None:
        if product_type and product_type not in manifest.product_types:
            return None
        found = {i.index: i for b in boards if (i := manifest.erase_identity(b))}
        if len(found) > 1:  # iPhone8,1: two chips, one ProductType
            classes = ", ".join(sorted({i.device_class for i in found.values()}))
            raise IpswError(f"{product_type} has {len(found)} boards in {manifest.build} ({classes}): "
                            f"give its CPID:BDID")
        return next(iter(found.values()), None)

    def _what_to_add(self, model: str, pin: str | None) -> str:
        pinned = f" (pinned to {pin})" if pin else ""
        wanted = f"no usable IPSW for {model}{pinned} in {self.dir}"
        try:
            published = self.catalog().newest_for(model, pin)
        except IpswError:
            published = None
        if published is None:
            return f"{wanted}; the catalog lists none: run station ipsw catalog refresh, then station ipsw add it"
        return f"{wanted}; add iOS {published.version} ({published.build}): station ipsw add {published.url}"


def _release(manifest: Manifest) -> tuple[tuple[int, ...], str]:
    """Sort key, larger is newer: iOS version, then build."""
    return catalogs.version_key(manifest.version), manifest.build
