"""`server.listen` as host and port, and whether it is reachable from beyond this machine."""

from __future__ import annotations

import ipaddress

DEFAULT_HOST = "127.0.0.1"


def split_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT`, `[::1]:PORT` or `:PORT` (loopback); ValueError with the expected shape otherwise."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"'{listen}' is not HOST:PORT, e.g. 127.0.0.1:9108")
    host = host.removeprefix("[").removesuffix("]")
    return host or DEFAULT_HOST, int(port_text)


def is_loopback(host: str) -> bool:
    """Only an address every other machine is refused on counts; a name other than localhost may resolve anywhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
