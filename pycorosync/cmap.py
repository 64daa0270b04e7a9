"""``pycorosync.cmap``: the cmap client library (corosync's libcmap). See ``CmapClient``."""

from pycorosync.ipc.client import (
    CS_DISPATCH_ALL,
    CS_DISPATCH_BLOCKING,
    CS_DISPATCH_ONE,
    CS_DISPATCH_ONE_NONBLOCKING,
)
from pycorosync.ipc.errors import CsError, CsErrorCode
from pycorosync.services.cmap.client import (
    CMAP_MAP_DEFAULT,
    CMAP_MAP_ICMAP,
    CMAP_MAP_STATS,
    CMAP_TRACK_ADD,
    CMAP_TRACK_DELETE,
    CMAP_TRACK_MODIFY,
    CMAP_TRACK_PREFIX,
    AsyncCmapClient,
    CmapClient,
    CmapTrackEvent,
    ValueType,
)

__all__ = [
    "CMAP_MAP_DEFAULT",
    "CMAP_MAP_ICMAP",
    "CMAP_MAP_STATS",
    "CMAP_TRACK_ADD",
    "CMAP_TRACK_DELETE",
    "CMAP_TRACK_MODIFY",
    "CMAP_TRACK_PREFIX",
    "CS_DISPATCH_ALL",
    "CS_DISPATCH_BLOCKING",
    "CS_DISPATCH_ONE",
    "CS_DISPATCH_ONE_NONBLOCKING",
    "AsyncCmapClient",
    "CmapClient",
    "CmapTrackEvent",
    "CsError",
    "CsErrorCode",
    "ValueType",
]
