"""The network check asks the hosts and ports a restore and a lock check really use."""
from __future__ import annotations

import socket

from hw.network import APPLE_HOSTS, apple_reachable


def test_the_check_asks_tss_on_port_80_and_activation_on_443():
    # pymobiledevice3 posts TSS to http://gs.apple.com/TSS/controller?action=2 (plain HTTP);
    # checking gs.apple.com:443 would say nothing about the port a restore needs.
    assert APPLE_HOSTS == (("gs.apple.com", 80), ("albert.apple.com", 443))


def test_an_unreachable_host_is_named_and_a_listening_one_passes():
    with socket.create_server(("127.0.0.1", 0)) as server:
        open_port = server.getsockname()[1]
        assert apple_reachable((("127.0.0.1", open_port),)) is None
    problem = apple_reachable((("127.0.0.1", open_port),))  # closed now
    assert problem is not None and problem.startswith(f"127.0.0.1:{open_port}: ")
