"""The IPSW cache: verified firmware files, matched to each phone, streamed with O(1) seeks.

Modules, one job each: ``models`` (chip/board -> ProductType table), ``manifest``
(BuildManifest and build-identity choice), ``reader`` (seekable members),
``digest`` (SHA-1 + SHA-256 in one pass), ``catalog`` (published digests),
``record`` (the verification result beside each file), ``transfer`` (copy or
resumable download into a temp file), ``cache`` (the directory), ``cli``.
"""
from station.ipsw.errors import IpswError, NoIpswError

__all__ = ["IpswError", "NoIpswError"]
