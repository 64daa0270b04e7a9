"""The cfg service process of a node, as the supervisor starts it:

    python -m pycorosync.services.cfg.server --config F --run-dir D --nodeid N --ready-fd FD

(with ``PYCOROSYNC_NODE`` in the environment, PROTOCOL.md §1). The service itself is
``pycorosync.services.cfg.service.CfgService``.
"""

from __future__ import annotations

from pycorosync.engine.runtime.service import service_main
from pycorosync.services.cfg.service import CfgService


def main(argv: list[str] | None = None) -> int:
    """Runs the cfg service until SIGTERM."""
    return service_main(CfgService, argv)


if __name__ == "__main__":
    from pycorosync.engine.supervisor.child import exit_process

    exit_process(main())
