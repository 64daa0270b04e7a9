"""cmap: the node's configuration and statistics database (corosync's cmap service, id 0)."""
