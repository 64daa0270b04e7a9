"""SAM, the Simple Availability Manager: a supervisor process that restarts its application (corosync's libsam)."""
