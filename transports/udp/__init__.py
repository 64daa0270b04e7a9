"""The UDP transport (udpu and udp): see transports/README.md.

Entry points: ``transports.udp.transport.UdpTransport(plan, tx_ring, rx_ring, tx_bell, rx_bell, ...)`` and
``run_transport(...)``; ``transports.udp.plan.plan_from_config(config, nodeid)``; for tests and benchmarks
``python -m pycorosync.transports.udp`` and ``transports.udp.node.TransportProcess``. Nothing is imported
here, so the package stays light for the CLI.
"""
