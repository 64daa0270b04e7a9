"""``pycorosync cfgtool``: corosync-cfgtool's options, output and exit codes.

    -s [-b] [-i IP|LINK]   link status of every nodelist node (-b: one character per node)
    -n                     reachable nodes and their links
    -R                     every node re-reads corosync.conf
    -L                     the node reopens its log files
    -k NODEID              kill a node (it logs the reason and stops)
    -a NODEID              the node's addresses, one per link
    -H [--force]           shut this node down (--force: whatever the trackers answer)

As corosync-cfgtool 3.1: the last action given wins; no action prints the usage; errors go to stderr.
Exit codes: 1 when the daemon cannot be reached or a node id is invalid; -s -b 1 when a link is faulty
(a peer's character is not 3); -R the reload result (1 when cmap holds a reload error); -L the cs_error
of a failure; -a 1 when the node is unknown; -k 1 on failure; -s, -n and -H otherwise 0 (-H reports a
refused shutdown on stderr only, as corosync-cfgtool does).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the clients pull numpy/numba: imported inside the handler only
    from pycorosync.services.cfg.protocol import CfgNodeStatus

UINT_MAX = 2**32 - 1
SHUTDOWN_RETRIES = 30  # corosync's cs_repeat(30) around try_shutdown, one second apart
KILL_REASON = "Killed by corosync-cfgtool"

USAGE = """corosync-cfgtool [[-i <interface ip>] [-b] -s] [-R] [-L] [-k nodeid] [-a nodeid] [-h] [-H]

A tool for displaying and configuring active parameters within corosync.
options:
\t-i\tFinds only information about the specified interface IP address or link id when used with -s..
\t-s\tDisplays the status of the current links on this node.
\t-n\tDisplays the status of the connected nodes and their links.
\t-b\tDisplays the brief status of the current links on this node when used with -s.
\t-R\tTell all instances of corosync in this cluster to reload corosync.conf.
\t-L\tTell corosync to reopen all logging files.
\t-k\tKill a node identified by node id.
\t-a\tDisplay the IP address(es) of a node
\t-h\tPrint basic usage.
\t-H\tShutdown corosync cleanly on this node.
\t\t--force will shut down corosync regardless of daemon vetos
"""


class _Action(argparse.Action):
    """Records the action (the last one given wins, as with corosync's getopt loop) and its node id."""

    def __init__(self, option_strings: Sequence[str], dest: str, action_name: str = "", **kw: Any) -> None:
        self.action_name = action_name
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        ns.action = self.action_name
        if values is not None and not isinstance(values, list):
            ns.nodeid_text = str(values)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``cfgtool`` to the ``pycorosync`` command line."""
    p = sub.add_parser(
        "cfgtool", help="display and configure the node's links and administration (corosync-cfgtool)",
        description="A tool for displaying and configuring active parameters within the cluster engine, "
                    "as corosync-cfgtool does.",
    )
    p.set_defaults(action=None, nodeid_text=None)
    p.add_argument("-i", "--if", dest="interface", metavar="ADDR", default="",
                   help="with -s: only the link with this local address or link number")
    flag = {"nargs": 0, "action": _Action}
    p.add_argument("-s", "--status", action_name="links", help="status of the current links on this node", **flag)
    p.add_argument("-n", "--nodes", action_name="nodes", help="status of the connected nodes and their links",
                   **flag)
    p.add_argument("-b", "--brief", action="store_true", help="with -s: brief status, one character per node")
    p.add_argument("-R", "--reload", action_name="reload", help="tell every node to reload corosync.conf", **flag)
    p.add_argument("-L", "--reopen", action_name="reopen", help="tell the node to reopen its log files", **flag)
    p.add_argument("-k", "--kill", action=_Action, action_name="kill", metavar="NODEID", help="kill a node")
    p.add_argument("-a", "--address", action=_Action, action_name="addrs", metavar="NODEID",
                   help="display the IP address(es) of a node")
    p.add_argument("-H", "--shutdown", action_name="shutdown", help="shut this node down cleanly", **flag)
    p.add_argument("--force", action="store_true", help="with -H: shut down whatever the trackers answer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The handler: one action, printed as corosync-cfgtool prints it; returns the exit code."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    action = getattr(args, "action", None)
    if action is None:
        out.write(USAGE)
        return 0
    nodeid = 0
    if action in ("kill", "addrs"):
        text = args.nodeid_text or ""
        if not text.isdigit() or not 1 <= int(text) <= UINT_MAX:
            err.write("The nodeid was not valid, try a positive number\n")
            return 1
        nodeid = int(text)
    from pycorosync.paths import resolve_run_dir

    tool = _Tool(str(resolve_run_dir(args.run_dir)), out, err)
    if action in ("links", "nodes"):
        return tool.node_status(action == "nodes", args.brief, args.interface)
    if action == "reload":
        return tool.reload()
    if action == "reopen":
        return tool.reopen()
    if action == "kill":
        return tool.kill(nodeid)
    if action == "addrs":
        return tool.addrs(nodeid)
    return tool.shutdown(args.force)


class _Tool:
    """The actions, each with its own cfg handle as corosync-cfgtool opens one per action."""

    def __init__(self, run_dir: str, out: TextIO, err: TextIO) -> None:
        self.run_dir = run_dir
        self.out = out
        self.err = err

    def _cfg(self, numeric_error: bool = True) -> Any:
        """A cfg handle, or None after printing corosync's message (numeric code, or its name for -R/-L)."""
        from pycorosync.ipc.errors import CsError
        from pycorosync.services.cfg.client import CfgClient

        try:
            return CfgClient(self.run_dir, timeout=10.0)
        except CsError as exc:
            code = str(exc.code) if numeric_error else exc.name
            self.err.write(f"Could not initialize corosync configuration API error {code}\n")
            return None

    # -- -s / -n ---------------------------------------------------------------------------------------
    def node_status(self, nodes_view: bool, brief: bool, interface: str) -> int:
        from pycorosync.ipc.errors import CsError
        from pycorosync.services.cmap.client import CmapClient

        cfg = self._cfg()
        if cfg is None:
            return 1
        with cfg:
            try:
                cmap = CmapClient(self.run_dir, timeout=10.0)
            except CsError as exc:
                self.err.write(f"Could not initialize corosync cmap API error {exc.code}\n")
                return 1
            with cmap:
                transport = _cmap_string(cmap, "totem.transport") or "knet"
                node_ids = _nodelist_ids(cmap)
            try:
                local = cfg.local_get()
            except CsError as exc:
                self.err.write(f"Could not get the local node id, the error is: {exc.code}\n")
                return 1
            if not node_ids:
                self.err.write("No nodes found in nodelist\n")
                return 1
            statuses: dict[int, CfgNodeStatus | None] = {}
            for nid in node_ids:
                try:
                    statuses[nid] = cfg.node_status_get(nid)
                except CsError as exc:
                    statuses[nid] = None
                    if not nodes_view:
                        self.err.write(f"Could not get the node status for nodeid {nid}, the error is: {exc.code}\n")
        if nodes_view:
            self.out.write(format_nodes(local, transport, node_ids, statuses))
            return 0
        text = format_links(local, transport, node_ids, statuses, brief, interface)
        self.out.write(text)
        # corosync-cfgtool(8): with -b, 1 when a link is faulty (a peer's link not enabled and connected)
        faulty = any(line.startswith("\tstatus\t= ") and set(line[len("\tstatus\t= "):]) - {"n", "3"}
                     for line in text.splitlines())
        return 1 if brief and faulty else 0

    # -- -R / -L ---------------------------------------------------------------------------------------
    def reload(self) -> int:
        from pycorosync.ipc.errors import CsError

        self.out.write("Reloading corosync.conf...\n")
        self.out.flush()
        cfg = self._cfg(numeric_error=False)
        if cfg is None:
            return 1
        with cfg:
            try:
                cfg.reload_config()
                self.out.write("Done\n")
            except CsError as exc:
                self.err.write(f"Could not reload configuration. Error {exc.name}\n")
        # as corosync-cfgtool: the exit code is whether cmap holds a reload error afterwards
        rc = self._reload_errors()
        if rc:
            self.err.write("Errors in applying config, corosync.conf might not match the running system\n")
        return rc

    def _reload_errors(self) -> int:
        from pycorosync.ipc.errors import CsError
        from pycorosync.services.cmap.client import CmapClient

        try:
            cmap = CmapClient(self.run_dir, timeout=10.0)
        except CsError as exc:
            self.err.write(f"Could not initialize corosync cmap API error {exc.code}\n")
            return 1
        with cmap:
            message = _cmap_string(cmap, "config.reload_error_message")
        if message is None:
            return 0
        self.out.write(f"ERROR from reload: {message} - see syslog for more information\n")
        return 1

    def reopen(self) -> int:
        from pycorosync.ipc.errors import CsError

        cfg = self._cfg(numeric_error=False)
        if cfg is None:
            return 1
        with cfg:
            try:
                cfg.reopen_log_files()
            except CsError as exc:
                self.err.write(f"Could not reopen corosync logging files. Error {exc.name}\n")
                return exc.code
        return 0

    # -- -k / -a / -H ----------------------------------------------------------------------------------
    def kill(self, nodeid: int) -> int:
        from pycorosync.ipc.errors import CsError

        self.out.write(f"Killing node {nodeid}\n")
        self.out.flush()
        cfg = self._cfg()
        if cfg is None:
            return 1
        with cfg:
            try:
                cfg.kill_node(nodeid, KILL_REASON)
            except CsError as exc:
                self.err.write(f"Could not kill node (error = {exc.name})\n")
                return 1
        return 0

    def addrs(self, nodeid: int) -> int:
        from pycorosync.ipc.errors import CsError

        cfg = self._cfg()
        if cfg is None:
            return 1
        with cfg:
            try:
                found = cfg.get_node_addrs(nodeid)
            except CsError:
                self.err.write(f"Could not get node address for nodeid {nodeid}\n")
                return 1
        self.out.write(" ".join(found) + "\n")
        return 0

    def shutdown(self, force: bool) -> int:
        from pycorosync.ipc.errors import CS_ERR_TRY_AGAIN, CsError
        from pycorosync.services.cfg.protocol import (
            COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS,
            COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST,
        )

        cfg = self._cfg()
        if cfg is None:
            return 1
        self.out.write("Shutting down corosync\n")
        self.out.flush()
        flags = COROSYNC_CFG_SHUTDOWN_FLAG_REGARDLESS if force else COROSYNC_CFG_SHUTDOWN_FLAG_REQUEST
        with cfg:
            for attempt in range(SHUTDOWN_RETRIES):
                try:
                    cfg.try_shutdown(flags)
                    break
                except CsError as exc:
                    if exc.code == CS_ERR_TRY_AGAIN and attempt + 1 < SHUTDOWN_RETRIES:
                        time.sleep(1.0)
                        continue
                    self.err.write(f"Could not shutdown (error = {exc.code})\n")
                    break
        return 0


def _cmap_string(cmap: Any, key: str) -> str | None:
    from pycorosync.ipc.errors import CsError

    try:
        value, _vtype = cmap.get(key)
    except CsError:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _nodelist_ids(cmap: Any) -> list[int]:
    """The ``nodelist.node.<n>.nodeid`` values, in node id order."""
    ids = []
    for key, _vtype, value in cmap.iter("nodelist.node."):
        parts = key.split(".")
        if len(parts) == 4 and parts[3] == "nodeid" and parts[2].isdigit() and isinstance(value, int):
            ids.append(int(value))
    return sorted(ids)


# -- layouts ------------------------------------------------------------------------------------------------
def _link_transport(transport: str) -> str:
    """What corosync-cfgtool prints after a link number: knet's link transport, nothing for udp/udpu."""
    return "udp" if transport == "knet" else ""


def format_nodes(local: int, transport: str, node_ids: list[int],
                 statuses: dict[int, CfgNodeStatus | None]) -> str:
    """``-n``: every reachable node but this one, with its enabled links."""
    from pycorosync.services.cfg.protocol import CFG_MAX_LINKS

    knet = transport == "knet"
    lines = [f"Local node ID {local}, transport {transport}"]
    for nid in node_ids:
        st = statuses.get(nid)
        if st is None or not st.reachable or st.nodeid == local:
            continue
        head = f"nodeid: {st.nodeid} reachable"
        head += " remote" if st.remote else ""
        head += " external" if st.external else ""
        lines.append(head)
        for number in range(CFG_MAX_LINKS):
            ln = st.link(number)
            if not ln.enabled:
                continue
            text = f"   LINK: {number} {_link_transport(transport)}"
            text += f" ({ln.src_ipaddr}{'->' if knet else ''}{ln.dst_ipaddr})"
            text += " enabled"
            text += " connected" if ln.connected else ""
            text += " dynconnected" if ln.dynconnected else ""
            lines.append(text + f" mtu: {ln.mtu}")
        lines.append("")
    return "\n".join(lines) + "\n"


def format_links(local: int, transport: str, node_ids: list[int], statuses: dict[int, CfgNodeStatus | None],
                 brief: bool = False, interface: str = "") -> str:
    """``-s`` (``-b``: brief): per enabled link, its local address and every node's state on it."""
    from pycorosync.services.cfg.protocol import CFG_MAX_LINKS, CfgNodeStatus

    lines = [f"Local node ID {local}, transport {transport}"]
    empty = CfgNodeStatus(0, 0, False)
    others = [n for n in node_ids if n != local and statuses.get(n) is not None]
    # as corosync: which links exist is read from another node's status (ours only has the local link)
    ref = statuses.get(others[-1] if others else local) or empty
    own = statuses.get(local) or empty
    for number in range(CFG_MAX_LINKS):
        if not ref.link(number).enabled:
            continue
        addr = ref.link(number).src_ipaddr or own.link(number).dst_ipaddr
        if interface and interface not in (str(number), addr):
            continue
        lines.append(f"LINK ID {number} {_link_transport(transport)}")
        lines.append(f"\taddr\t= {addr}")
        if brief:
            chars = []
            for nid in node_ids:
                st = statuses.get(nid)
                if nid == local or st is None:
                    chars.append("n" if nid == local else "?")  # '?': the status could not be read
                    continue
                ln = st.link(number)
                chars.append(chr(ord("0") + (int(ln.enabled) | int(ln.connected) << 1)))
            lines.append("\tstatus\t= " + "".join(chars))
            continue
        lines.append("\tstatus:")
        for nid in node_ids:
            st = statuses.get(nid)
            if nid == local:
                state = "localhost"
            else:
                state = "connected" if st is not None and st.link(number).connected else "disconnected"
            lines.append(f"\t\tnodeid: {nid:>10}:\t{state}")
    return "\n".join(lines) + "\n"
