"""The node supervisor (the ``pycorosync daemon`` process) and the child-watch machinery SAM reuses.

Modules (import what you need; nothing here is imported eagerly, so the CLI stays fast):

- ``process``: ``ChildSpec`` (what to run, restart rule, readiness, timeouts), ``RestartRule``,
  ``ChildProcess`` (one running instance: pidfd, ready pipe, stderr tail), ``ExitStatus``.
- ``watch``: ``ChildWatch``: spawn + watch in an ``EventLoop``; ``stop()``/``stop_all()`` = warn signal, timeout, SIGKILL.
- ``policy``: ``RestartPolicy`` / ``RestartBudget``: backoff and restart-storm limit (pure, takes ``now_s``).
- ``loop``: ``EventLoop``: epoll readers, monotonic timers, signals through a wakeup fd.
- ``node``: ``NodePlan`` (ordered specs, dependencies, shm prefix) and ``NodeSupervisor`` (starts each child once
  its dependencies are ready, independent ones together; stops in reverse dependency waves).
- ``resources``: per-process eventfd doorbells and ``PYCOROSYNC_NODE`` (engine/runtime/PROTOCOL.md §1).
- ``plan``: the node's restart policy (its processes: ``engine.runtime.node.build_node``).
- ``daemon``: run dir, pid file, logging, foreground or double-fork background; ``pidfile``; ``shm``.
- ``logsetup``: the ``logging.*`` keys, corosync's line layout, subsystem loggers, reopen (SIGHUP in every process).
- ``child``: what a child calls: ``notify_ready()``, ``die_with_supervisor()``, ``restart_count()``.
"""
