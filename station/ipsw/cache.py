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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.config import IpswSection
from station.ipsw import catalog as catalogs
from station.ipsw import models
from station.ipsw import record as records
from station.ipsw.digest import Digests, file_digests
from station.ipsw.errors import IpswError, NoIpswError, printable, shown
from station.ipsw.files import fsync_dir
from station.ipsw.manifest import Identity, Manifest, read_manifest
from station.ipsw.reader import IpswArchive
from station.ipsw.record import Record
from station.ipsw.transfer import DownloadInterrupted, Progress, checked_url, copy_file, download, is_url

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.json"
PART_SUFFIX = ".part"
# A name must leave room for what goes beside it within Linux's 255-byte NAME_MAX: the longest is
# write_atomic's temp file of the record, ".NAME.verify.json.XXXXXXXX.tmp" (26 more bytes).
NAME_MAX_BYTES = 200


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
        self._manifests: dict[tuple[Path, int, int, int, int], Manifest] = {}

    # -- reading ------------------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        if not self.dir.is_dir():
            return []
        return [self._entry(path) for path in sorted(self.dir.glob("*.ipsw"))]

    def find(self, name: str) -> Entry:
        """A cached IPSW by file name, or by a path to it in the cache (never a file of that name elsewhere)."""
        given = Path(name)
        if given.name != name and given.parent.resolve() != self.dir.resolve():
            raise IpswError(f"{printable(name)}: not in the cache ({self.dir}); give the file name "
                            f"({printable(given.name)})")
        path = self.dir / given.name
        if path.suffix != ".ipsw" or not path.is_file():
            raise IpswError(f"{printable(given.name)}: not in the cache ({self.dir})")
        return self._entry(path)

    def catalog(self) -> catalogs.Catalog:
        return catalogs.load(self.dir / CATALOG_FILE)

    def manifest(self, path: Path) -> Manifest:
        key = (path, *records.fingerprint(path.stat()))
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
        from_url = is_url(source)
        if from_url:
            source = checked_url(source)
            name = Path(urllib.parse.unquote(urllib.parse.urlsplit(source).path)).name
        else:
            name = Path(source).name
        _check_name(name, source)
        final = self.dir / name
        if final.exists():
            raise IpswError(f"{name} is already in the cache (station ipsw verify {name} checks it again)")
        if not from_url:
            self._check_source(Path(source))  # fail in a second, not after copying 8 GB
        self._make_dir()
        part = self.dir / f".{name}{PART_SUFFIX}"
        try:
            if from_url:
                digests = download(source, part, self.section.download_timeout_s, self.section.download_retries,
                                   progress)
            else:
                digests = copy_file(Path(source), part, progress)
            manifest = read_manifest(part, name)
            stat = part.stat()
            verdict = self._judge(name, part, stat, manifest, digests, trust_unlisted, previous=None)
            if not verdict.usable:
                raise IpswError(verdict.reason)
            records.save(final, verdict)  # the record first: the IPSW never shows up unverified
            os.rename(part, final)
            fsync_dir(self.dir)
        except BaseException as error:
            # A broken download stays to be resumed; anything else (bad file, disk full) goes.
            if not (from_url and isinstance(error, (DownloadInterrupted, KeyboardInterrupt))):
                part.unlink(missing_ok=True)
                part.with_name(part.name + ".json").unlink(missing_ok=True)
            if not final.exists():
                records.path_for(final).unlink(missing_ok=True)
            raise
        moved = final.stat()  # the rename set a new ctime: keep the record current (see record.py)
        if moved.st_ctime_ns != stat.st_ctime_ns and records.fingerprint(moved)[:3] == records.fingerprint(stat)[:3]:
            records.save(final, replace(verdict, ctime_ns=moved.st_ctime_ns))
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
        if records.fingerprint(entry.path.stat()) != records.fingerprint(stat):
            raise IpswError(f"{entry.path.name}: changed while it was being verified")
        verdict = self._judge(entry.path.name, entry.path, stat, manifest, digests, trust_unlisted,
                              previous=entry.record)
        records.save(entry.path, verdict)
        log.info("verified %s: %s", entry.path.name, verdict.state)
        if not verdict.usable:
            raise IpswError(verdict.reason)
        return self._entry(entry.path)

    def remove(self, name: str) -> Path:
        """Delete a cached IPSW and its record; ``name`` as for ``find``."""
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
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private, as the state directory is
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
            raise IpswError(f"{name}: its BuildManifest is for {_listed(manifest.product_types) or 'no model'}, "
                            f"not an iPhone this station restores")

    def _judge(self, name: str, path: Path, stat: os.stat_result, manifest: Manifest, digests: Digests,
               trust_unlisted: bool, previous: Record | None) -> Record:
        """The verification record of a hashed file: verified, unlisted (trusted) or failed with a reason."""
        self._check_models(name, manifest)
        catalog, not_refreshed = self.catalog(), ""
        if catalog.by_sha1(digests.sha1) is None and not catalog.for_build(manifest.build, manifest.product_types):
            catalog, not_refreshed = self._try_refresh(manifest.product_types, catalog)
        verdict = self._verdict(name, path, stat, manifest, digests, trust_unlisted, previous, catalog,
                                not_refreshed)
        if not_refreshed and verdict.usable:
            log.warning("%s; used the saved copy", not_refreshed)
        return verdict

    def _verdict(self, name: str, path: Path, stat: os.stat_result, manifest: Manifest, digests: Digests,
                 trust_unlisted: bool, previous: Record | None, catalog: catalogs.Catalog,
                 not_refreshed: str) -> Record:
        published = catalog.by_sha1(digests.sha1)
        listed = catalog.for_build(manifest.build, manifest.product_types)
        what = f"iOS {manifest.version} ({manifest.build}) for {_listed(manifest.product_types)}"

        def verdict(state: records.State, reason: str) -> Record:
            return Record(state=state, size=stat.st_size, mtime_ns=stat.st_mtime_ns, inode=stat.st_ino,
                          ctime_ns=stat.st_ctime_ns, checked_at=datetime.now(UTC).isoformat(timespec="seconds"),
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
            # Nobody published these bytes: at least the files the restore reads must be in the zip.
            missing = manifest.missing_files(set(IpswArchive(path, name).namelist()))
            if missing:
                more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                return verdict("failed", f"{name}: its BuildManifest names a file the zip does not hold: "
                                         f"{missing[0]}{more}")
            return verdict("unlisted", "not in the catalog, accepted with --trust-unlisted")
        # Why the catalog may be out of date goes into the one line, not on a line of its own before it.
        fetched = catalog.fetched_text(manifest.product_types) + (f"; {not_refreshed}" if not_refreshed else "")
        return verdict("failed", f"{name}: {what} is not in the catalog ({fetched}); "
                                 f"add --trust-unlisted to accept it anyway")

    def _try_refresh(self, wanted: tuple[str, ...], catalog: catalogs.Catalog) -> tuple[catalogs.Catalog, str]:
        """The catalog fetched again for ``wanted`` when online; the saved copy and why when not."""
        try:
            return self.refresh_catalog(tuple(m for m in wanted if models.is_iphone(m)))[0], ""
        except IpswError as error:
            return catalog, str(error)

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


def _check_name(name: str, source: str) -> None:
    """The name a file gets in the cache: shown by `ipsw list`, so one line, visible, and short enough."""
    if not name.endswith(".ipsw"):
        raise IpswError(f"{printable(name or source)}: not an .ipsw file name")
    if not name.isprintable():
        control = any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name)
        raise IpswError(f"{shown(name)}: a file name with {'a control' if control else 'an unprintable'} character")
    if name.startswith("."):
        raise IpswError(f"{shown(name)}: a hidden file name (it starts with '.')")
    if len(name.encode()) > NAME_MAX_BYTES:
        raise IpswError(f"{shown(name)}: a file name longer than {NAME_MAX_BYTES} bytes")


def _listed(items: tuple[str, ...], most: int = 4) -> str:
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def _release(manifest: Manifest) -> tuple[tuple[int, ...], str]:
    """Sort key, larger is newer: iOS version, then build."""
    return catalogs.version_key(manifest.version), manifest.build
