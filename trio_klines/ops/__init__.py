"""Operations: what a service manager and monitoring talk to.

``notify``: the sd_notify protocol (systemd's ``Type=notify``: ready, status, watchdog, reloading, stopping).
"""
