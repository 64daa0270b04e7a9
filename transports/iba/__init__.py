"""InfiniBand verbs transport (corosync's ``iba``): Totem frames over one RC queue pair per peer."""
