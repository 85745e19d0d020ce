"""The IPSW cache directory: add, list, verify, remove, prune, and the choice of firmware for a phone.

Layout of ``[ipsw] cache_dir``::

    NAME.ipsw               complete and verified (or accepted with --trust-unlisted)
    NAME.ipsw.verify.json   its verification record (record.py)
    .NAME.ipsw.part         an add in progress, or a download to resume
    catalog.json            published sizes and digests, and which builds Apple signs (catalog.py)
    .lock                   the lock that keeps commands and the station apart (lock.py)

A file gets its final name only after it was copied, fsynced and verified, so a
crash or a bad input leaves the cache as it was (apart from a resumable part).
"""
from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hw.ipsw_archive import IpswArchive
from station.config import IpswSection
from station.ipsw import catalog as catalogs
from station.ipsw import models
from station.ipsw import record as records
from station.ipsw.digest import Digests, file_digests
from station.ipsw.errors import IpswError, NoIpswError, NotSignedError, printable, shown
from station.ipsw.files import fsync_dir
from station.ipsw.lock import CacheLock, Lease, claim, in_use
from station.ipsw.manifest import Identity, Manifest, read_manifest
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
    signed: bool | None = None  # does Apple sign it, as the saved catalog says; None: not listed

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
                "checked_at": known.checked_at if known else None, "signed": self.signed}


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
    signed: bool | None = None
    # Held from the choice until the restore that reads the file ends (``select(hold=True)``).
    lease: Lease | None = field(default=None, compare=False, repr=False)

    def release(self) -> None:
        """The restore that read the file has ended: remove and prune may take it again."""
        if self.lease is not None:
            self.lease.release()

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "file": self.path.name, "path": str(self.path), "build": self.build,
                "version": self.version, "sha256": self.sha256, "signed": self.signed,
                "identity": {"index": self.identity_index, "DeviceClass": self.device_class,
                             "Variant": self.variant, "RestoreBehavior": self.restore_behavior}}


class IpswCache:
    def __init__(self, section: IpswSection) -> None:
        self.section = section
        self.dir = section.cache_dir
        self.lock = CacheLock(self.dir)
        self._manifests: dict[tuple[Path, int, int, int, int], Manifest] = {}

    # -- reading ------------------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        if not self.dir.is_dir():
            return []
        signing = self._signing()
        return [self._entry(path, signing) for path in sorted(self.dir.glob("*.ipsw"))]

    def find(self, name: str) -> Entry:
        """A cached IPSW by file name, or by a path to it in the cache (never a file of that name elsewhere)."""
        given = Path(name)
        if given.name != name and given.parent.resolve() != self.dir.resolve():
            raise IpswError(f"{printable(name)}: not in the cache ({self.dir}); give the file name "
                            f"({printable(given.name)})")
        path = self.dir / given.name
        if path.suffix != ".ipsw" or not path.is_file():
            raise IpswError(f"{printable(given.name)}: not in the cache ({self.dir})")
        return self._entry(path, self._signing())

    def find_cached(self, source: str, progress: Progress | None = None) -> Entry | None:
        """The cached, verified entry that holds the very file ``source`` names (adding it again is
        then a success); None when no file of its name is cached; IpswError when one is, but it is
        another file or not verified.

        A URL is the cached file when the catalog publishes it with the cached digest or, unlisted,
        when the cached file was downloaded from it: nothing is downloaded to tell. A path is when
        it is the cached file, or has its size and SHA-256 (read once, never copied).
        """
        name, url = self.name_of(source)
        path = self.dir / name
        if not path.exists():
            return None
        entry = self._entry(path, self._signing())
        if not entry.usable or entry.record is None:
            failed = entry.current and entry.record is not None  # checked, and found wrong: no use checking again
            todo = f"station ipsw remove {name}, then add it again" if failed else f"station ipsw verify {name} checks it"
            raise IpswError(f"{name} is already in the cache, {entry.state}: {todo}")
        if url is not None:
            published = next((e for e in self._signing().entries if e.url == url), None)
            same = (published.sha1 == entry.record.sha1 and published.size == entry.size if published
                    else entry.record.source == url)
        else:
            same = self._same_file(Path(source), entry, progress)
        if not same:
            raise IpswError(f"{name} is already in the cache, and {printable(source)} is another file: "
                            "station ipsw remove it first to add this one")
        return entry

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
        """Copy a file or download a URL into the cache, verified; IpswError leaves the cache unchanged.

        The very file already cached and verified is no error: its entry comes back (``find_cached``).
        """
        cached = self.find_cached(source, progress)
        if cached is not None:
            log.info("%s is already cached", cached.path.name)
            return cached
        name, url = self.name_of(source)
        if url is None:
            self._check_source(Path(source))  # fail in a second, not after copying 8 GB
        self._make_dir()
        final = self.dir / name
        part = self.dir / f".{name}{PART_SUFFIX}"
        with claim(part, name):  # outside the try: another add's part is not ours to delete
            try:
                if url is not None:
                    digests = download(url, part, self.section.download_timeout_s, self.section.download_retries,
                                       progress)
                else:
                    digests = copy_file(Path(source), part, progress)
                manifest = read_manifest(part, name)
                stat = part.stat()
                verdict = self._judge(name, part, stat, manifest, digests, trust_unlisted, previous=None)
                if not verdict.usable:
                    raise IpswError(verdict.reason)
                verdict = replace(verdict, source=url or str(Path(source).resolve()))
                with self.lock.exclusive():
                    return self._commit(part, final, stat, verdict, source)
            except BaseException as error:
                # A broken download stays to be resumed; anything else (bad file, disk full) goes.
                if not (url is not None and isinstance(error, (DownloadInterrupted, KeyboardInterrupt))):
                    part.unlink(missing_ok=True)
                    part.with_name(part.name + ".json").unlink(missing_ok=True)
                if not final.exists():
                    records.path_for(final).unlink(missing_ok=True)
                raise

    def _commit(self, part: Path, final: Path, stat: os.stat_result, verdict: Record, source: str) -> Entry:
        """Give a verified part its final name (under the exclusive lock)."""
        if final.exists():  # another command added this name while we copied
            entry = self._entry(final)
            if not (entry.usable and entry.record is not None and entry.record.sha256 == verdict.sha256):
                raise IpswError(f"{final.name} is already in the cache, and {printable(source)} is another file: "
                                "station ipsw remove it first to add this one")
            part.unlink()
            log.info("%s is already cached", final.name)
            return entry
        records.save(final, verdict)  # the record first: the IPSW never shows up unverified
        os.rename(part, final)
        fsync_dir(self.dir)
        moved = final.stat()  # the rename set a new ctime: keep the record current (see record.py)
        if moved.st_ctime_ns != stat.st_ctime_ns and records.fingerprint(moved)[:3] == records.fingerprint(stat)[:3]:
            records.save(final, replace(verdict, ctime_ns=moved.st_ctime_ns))
        log.info("added %s: iOS %s (%s) for %s, %s", final.name, verdict.version, verdict.build,
                 ", ".join(verdict.models), verdict.state)
        return self._entry(final, self._signing())

    def verify(self, name: str, trust_unlisted: bool = False, progress: Progress | None = None) -> Entry:
        """Hash a cached IPSW again and store the result; IpswError (stored too) when it fails."""
        with self.lock.shared():  # a prune waits: the file stays while it is hashed
            return self._verify(name, trust_unlisted, progress)

    def _verify(self, name: str, trust_unlisted: bool = False, progress: Progress | None = None) -> Entry:
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
        return self._entry(entry.path, self._signing())

    def remove(self, name: str) -> Path:
        """Delete a cached IPSW and its record; ``name`` as for ``find``. A file a restore reads stays."""
        return self.remove_all([name])[0]

    def remove_all(self, names: Iterable[str]) -> list[Path]:
        """Delete cached IPSWs, all or none: IpswError, and nothing deleted, when one is not in the
        cache or a restore reads it. A file named twice is removed once."""
        with self.lock.exclusive():
            paths = list(dict.fromkeys(self.find(name).path for name in names))
            for path in paths:
                if in_use(path):
                    raise IpswError(f"{path.name} is in use by a restore; remove it when the restore is done")
            for path in paths:
                self._delete(path)
        return paths

    def prune(self, keep: int, dry_run: bool = False, progress: Progress | None = None) -> list[Path]:
        """Remove usable IPSWs that are not among the ``keep`` newest (or pinned) for any of their
        models, but none a restore reads now; the ones removed (or, ``dry_run``, that would be)."""
        with self.lock.exclusive():
            ranked = sorted(((e, self.manifest(e.path)) for e in self.entries() if e.usable),
                            key=lambda pair: _release(pair[1]), reverse=True)
            kept: set[Path] = set()
            for model in {m for _, manifest in ranked for m in manifest.product_types}:
                supporting = [(e, m) for e, m in ranked if model in m.product_types]
                kept.update(e.path for e, _ in supporting[:keep])
                pin = self.section.pin.get(model)
                kept.update(e.path for e, m in supporting if pin in (m.version, m.build))
            doomed = [e for e, _ in ranked if e.path not in kept]
            if dry_run:
                return [e.path for e in doomed]
            removed, freed, total = [], 0, sum(e.size for e in doomed)
            for entry in doomed:
                if in_use(entry.path):
                    log.warning("%s is in use by a restore: not pruned", entry.path.name)
                    continue
                self._delete(entry.path)
                removed.append(entry.path)
                freed += entry.size
                if progress is not None:
                    progress(freed, total)
            return removed

    def _delete(self, path: Path) -> None:
        path.unlink()
        records.path_for(path).unlink(missing_ok=True)
        fsync_dir(self.dir)
        log.info("removed %s", path.name)

    # -- choosing -----------------------------------------------------------------------------------

    def select(self, product_type: str | None = None, chip_id: int | None = None,
               board_id: int | None = None, hold: bool = False) -> Selection:
        """The IPSW and Erase build identity for a phone: the newest usable one Apple signs, or the
        pinned version. ``hold``: the file stays in the cache until ``selection.lease`` is released.

        A phone in normal mode is known by ProductType, one in recovery/DFU by chip id +
        board id. A file whose record is stale is verified again (hashed) before use. A build
        the catalog says Apple no longer signs is refused (NotSignedError, what to add in its
        log message) when there is none it signs: its restore would fail at the signing step.
        """
        model, boards = self._boards(product_type, chip_id, board_id)
        with self.lock.shared():
            selection = self._select(model, boards, product_type)
            return replace(selection, lease=Lease(selection.path)) if hold else selection

    def _select(self, model: str, boards: tuple[models.Board, ...], product_type: str | None) -> Selection:
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
        # Signed (or not listed) before not signed, then newest first.
        ranked = sorted(candidates, key=lambda c: (c[0].signed is not False, _release(c[1])), reverse=True)
        for entry, manifest, identity in ranked:
            if not entry.usable:
                log.info("%s changed since it was verified: verifying before use", entry.path.name)
                try:
                    entry = self._verify(entry.path.name)
                except IpswError as error:
                    log.warning("not using %s: %s", entry.path.name, error)
                    continue
            assert entry.record is not None
            if entry.signed is False:
                raise self._not_signed(model, pin, manifest)
            return Selection(path=entry.path, build=manifest.build, version=manifest.version,
                             sha256=entry.record.sha256, model=model, identity_index=identity.index,
                             device_class=identity.device_class, variant=identity.variant,
                             restore_behavior=identity.restore_behavior or "", signed=entry.signed)
        raise NoIpswError(model, self._what_to_add(model, pin))

    # -- helpers ------------------------------------------------------------------------------------

    def _entry(self, path: Path, signing: catalogs.Catalog | None = None) -> Entry:
        stat = path.stat()
        found = records.load(path)
        signed = signing.signed(found.sha1) if signing is not None and found is not None else None
        return Entry(path, stat.st_size, found, found is not None and found.is_current(stat), signed)

    def _signing(self) -> catalogs.Catalog:
        """The saved catalog, for who signs what; an unreadable one counts as none (and is said)."""
        try:
            return self.catalog()
        except IpswError as error:
            log.warning("%s", error)
            return catalogs.Catalog()

    def name_of(self, source: str) -> tuple[str, str | None]:
        """The name ``source`` gets in the cache, and the URL as it is sent (None for a path)."""
        if is_url(source):
            url = checked_url(source)
            name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
            _check_name(name, url)
            return name, url
        name = Path(source).name
        _check_name(name, source)
        return name, None

    @staticmethod
    def _same_file(source: Path, entry: Entry, progress: Progress | None) -> bool:
        assert entry.record is not None
        try:
            if source.samefile(entry.path):
                return True
            size = source.stat().st_size
            if size != entry.size:
                return False
            digests = file_digests(source, (lambda done: progress(done, size)) if progress else None)
        except OSError as error:
            raise IpswError(f"{source}: {error.strerror or error}") from None
        return digests.sha256 == entry.record.sha256

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
            fetched = catalog.fetched_on(manifest.product_types)
            log.warning("%s; %s", not_refreshed, f"used the saved copy (catalog fetched {fetched})" if fetched
                        else "no saved catalog to check it against")
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

    def _not_signed(self, model: str, pin: str | None, manifest: Manifest) -> NotSignedError:
        """The refusal of a build Apple no longer signs, saying what to add (or to change the pin)."""
        what = f"iOS {manifest.version} ({manifest.build}) for {model} is no longer signed by Apple"
        catalog = self._signing()
        when = catalog.fetched_text((model,))
        if pin is not None:
            return NotSignedError(model, manifest.build, f"{what} ({when}); [ipsw] pin.{model} = \"{pin}\" names "
                                  "it: pin a signed version, or remove the pin", "unpin")
        newest = catalog.newest_for(model, signed=True)
        if newest is None:
            return NotSignedError(model, manifest.build, f"{what} ({when}), and the catalog lists no signed one "
                                  "for it: station ipsw catalog refresh, then add one")
        return NotSignedError(model, manifest.build, f"{what} ({when}); add iOS {newest.version} ({newest.build}): "
                              f"station ipsw add {newest.url}", f"add iOS {newest.version}")

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
