"""The restart policy of a node's processes. The processes themselves, their order and their restart
rules are the node plan built by ``pycorosync.engine.runtime.node.build_node`` from the config."""

from __future__ import annotations

from pycorosync.engine.supervisor.policy import RestartPolicy

#: at most 5 restarts of one process within a minute; one more failure stops the node (a restart storm)
DEFAULT_POLICY = RestartPolicy(max_restarts=5, window_s=60.0)
