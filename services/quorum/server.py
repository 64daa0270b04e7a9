"""The quorum service process of a node, as the supervisor starts it:

    python -m pycorosync.services.quorum.server --config F --run-dir D --nodeid N --ready-fd FD

(with ``PYCOROSYNC_NODE`` in the environment, PROTOCOL.md §1). The service itself, quorum and votequorum in
one process, is ``pycorosync.services.quorum.service.QuorumService``.
"""

from __future__ import annotations

from pycorosync.engine.runtime.service import service_main
from pycorosync.services.quorum.service import QuorumService


def main(argv: list[str] | None = None) -> int:
    """Runs the quorum service until SIGTERM."""
    return service_main(QuorumService, argv)


if __name__ == "__main__":
    from pycorosync.engine.supervisor.child import exit_process

    exit_process(main())
