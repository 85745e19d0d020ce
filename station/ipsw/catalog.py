"""The catalog of published IPSW sizes and digests, kept on disk with its fetch dates.

Fetched per model from a URL template in the ipsw.me v4 shape
(``{"firmwares": [{url, filesize, sha1sum, sha256sum, buildid, version, identifier, signed}]}``);
``{identifier}`` in the template becomes the ProductType. Offline, the saved copy
is used as it is: each model's entry says when it was fetched.
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.ipsw.errors import IpswError
from station.ipsw.files import write_atomic

FETCH_THREADS = 4


@dataclass(frozen=True)
class Published:
    """One IPSW as its publisher lists it."""

    url: str
    build: str
    version: str
    size: int
    sha1: str
    sha256: str | None  # older listings publish SHA-1 only
    models: tuple[str, ...]
    signed: bool | None = None

    @property
    def file_name(self) -> str:
        return urllib.parse.unquote(self.url.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Catalog:
    entries: tuple[Published, ...] = ()
    fetched: dict[str, str] = field(default_factory=dict)  # ProductType -> ISO time of its last fetch

    def by_sha1(self, sha1: str) -> Published | None:
        return next((e for e in self.entries if e.sha1 == sha1), None)

    def for_build(self, build: str, models: tuple[str, ...]) -> list[Published]:
        return [e for e in self.entries if e.build == build and set(e.models) & set(models)]

    def newest_for(self, model: str, version: str | None = None, signed: bool = False) -> Published | None:
        """The newest published IPSW for ``model``, or the one of ``version`` (an iOS version or build);
        ``signed``: only one Apple signs (or whose listing does not say)."""
        found = [e for e in self.entries if model in e.models and version in (None, e.version, e.build)
                 and not (signed and e.signed is False)]
        return max(found, key=lambda e: (version_key(e.version), e.build), default=None)

    def signed(self, sha1: str) -> bool | None:
        """Does Apple sign the file of this SHA-1, as of the last fetch? None: not listed, or not said."""
        published = self.by_sha1(sha1) if sha1 else None
        return published.signed if published is not None else None

    def fetched_on(self, models: tuple[str, ...]) -> str:
        """The dates ``models`` were last fetched ("2026-12-01, 2026-12-02"); empty when never."""
        return ", ".join(sorted({self.fetched[m][:10] for m in models if m in self.fetched}))

    def fetched_text(self, models: tuple[str, ...]) -> str:
        dates = self.fetched_on(models)
        return f"catalog fetched {dates}" if dates else "catalog never fetched for these models"


def load(path: Path) -> Catalog:
    try:
        raw = json.loads(path.read_text())
        entries = tuple(Published(**{**e, "models": tuple(e["models"])}) for e in raw["entries"])
        return Catalog(entries, dict(raw["fetched"]))
    except FileNotFoundError:
        return Catalog()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise IpswError(f"{path}: unreadable catalog ({error}); run station ipsw catalog refresh") from None


def save(catalog: Catalog, path: Path) -> None:
    data = {"fetched": catalog.fetched, "entries": [asdict(e) for e in catalog.entries]}
    write_atomic(path, json.dumps(data, indent=1).encode())


def refresh(catalog: Catalog, url_template: str, models: tuple[str, ...],
            timeout: float) -> tuple[Catalog, dict[str, str]]:
    """``catalog`` with ``models`` fetched again, and the one-line failure of each model that failed."""
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        results = dict(zip(models, pool.map(lambda m: _fetch_model(url_template, m, timeout), models), strict=True))
    failures = {m: r for m, r in results.items() if isinstance(r, str)}
    fetched = {m: r for m, r in results.items() if not isinstance(r, str)}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    merged: dict[str, Published] = {}
    for entry in catalog.entries:  # drop what the fetched models said before; their new lists replace it
        kept = tuple(m for m in entry.models if m not in fetched)
        if kept:
            merged[entry.url] = replace(entry, models=kept)
    for entries in fetched.values():
        for entry in entries:
            old = merged.get(entry.url)
            merged[entry.url] = replace(entry, models=tuple(dict.fromkeys((old.models if old else ()) + entry.models)))
    return (Catalog(tuple(merged.values()), {**catalog.fetched, **{m: now for m in fetched}}), failures)


def _fetch_model(url_template: str, model: str, timeout: float) -> list[Published] | str:
    url = url_template.replace("{identifier}", urllib.parse.quote(model, safe=","))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            body = json.load(reply)
        return [_published(f) for f in body["firmwares"]]
    except urllib.error.HTTPError as error:
        return f"{model}: {url}: HTTP {error.code} {error.reason}"
    except (urllib.error.URLError, OSError) as error:
        return f"{model}: {url}: {getattr(error, 'reason', None) or error}"
    except (ValueError, KeyError, TypeError) as error:
        return f"{model}: {url}: not a firmware list ({error})"


def _published(firmware: dict[str, Any]) -> Published:
    return Published(url=str(firmware["url"]), build=str(firmware["buildid"]), version=str(firmware["version"]),
                     size=int(firmware["filesize"]), sha1=str(firmware["sha1sum"]).lower(),
                     sha256=str(firmware["sha256sum"]).lower() if firmware.get("sha256sum") else None,
                     models=(str(firmware["identifier"]),), signed=firmware.get("signed"))


def version_key(version: str) -> tuple[int, ...]:
    # ASCII digits, and few: str.isdigit() takes "²", which int() refuses, and int() refuses over 4300 digits.
    return tuple(int(p) for p in version.split(".") if re.fullmatch(r"[0-9]{1,9}", p))
