"""``pycorosync.cfg``: the node administration client library (corosync's libcfg). See ``CfgClient``."""

from pycorosync.ipc.client import (
    CS_DISPATCH_ALL,
    CS_DISPATCH_BLOCKING,
    CS_DISPATCH_ONE,
    CS_DISPATCH_ONE_NONBLOCKING,
)
from pycorosync.ipc.errors import CsError, CsErrorCode, cs_strerror
from pycorosync.services.cfg.client import (
    CFG_NODE_STATUS_V1,
    COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE,
    COROSYNC_CFG_SHUTDOWN_FLAG_NO,
    COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS,
    COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST,
    COROSYNC_CFG_SHUTDOWN_FLAG_YES,
    AsyncCfgClient,
    CfgClient,
    CfgLinkStatus,
    CfgNodeStatus,
    ShutdownRequest,
)

__all__ = [
    "CFG_NODE_STATUS_V1",
    "COROSYNC_CFG_SHUTDOWN_FLAG_IMMEDIATE",
    "COROSYNC_CFG_SHUTDOWN_FLAG_NO",
    "COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS",
    "COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST",
    "COROSYNC_CFG_SHUTDOWN_FLAG_YES",
    "CS_DISPATCH_ALL",
    "CS_DISPATCH_BLOCKING",
    "CS_DISPATCH_ONE",
    "CS_DISPATCH_ONE_NONBLOCKING",
    "AsyncCfgClient",
    "CfgClient",
    "CfgLinkStatus",
    "CfgNodeStatus",
    "CsError",
    "CsErrorCode",
    "ShutdownRequest",
    "cs_strerror",
]
