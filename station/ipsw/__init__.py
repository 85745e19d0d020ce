"""The IPSW cache: verified firmware files, matched to each phone, streamed with O(1) seeks.

Modules, one job each: ``models`` (chip/board -> ProductType table), ``manifest``
(BuildManifest and build-identity choice), ``reader`` (seekable members),
``digest`` (SHA-1 + SHA-256 in one pass), ``catalog`` (published digests, and
which builds Apple signs), ``record`` (the verification result beside each
file), ``transfer`` (copy or resumable download into a temp file), ``lock``
(one writer: commands and the station never race), ``cache`` (the directory),
``prefetch`` (the newest signed builds, within a disk budget), ``seen`` (models
the records saw lately), ``upkeep`` (the running station's daily catalog, NOT
SIGNED line and prefetch), ``progress`` (terminal bars), ``cli``.
"""
from station.ipsw.errors import IpswError, NoIpswError

__all__ = ["IpswError", "NoIpswError"]
