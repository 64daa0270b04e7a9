"""quorum and votequorum: corosync's quorum (id 3) and votequorum (id 5) services."""
