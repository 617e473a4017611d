"""WebRTC switches of the live webcam beyond its ICE servers (those are `app.settings.ice_servers`, read from
$FERCORE_ICE_SERVERS): a test-only one that lets the browser and the server meet when the loopback interface is
the only network (the browser tests run offline in such a network namespace).

No aioice import at module level: the switch imports it only when it is on.
"""
from __future__ import annotations

import os

LOOPBACK_ENV = "FERCORE_RTC_LOOPBACK"
LOOPBACK_ADDRESS = "127.0.0.1"


def loopback_requested() -> bool:
    """Whether $FERCORE_RTC_LOOPBACK asks for loopback ICE candidates (set by the browser tests, never in use)."""
    return os.environ.get(LOOPBACK_ENV, "").strip().lower() not in ("", "0", "false", "no")


def offer_loopback_candidates() -> None:
    """TEST ONLY: make aioice (the server's ICE agent) offer 127.0.0.1 as a host candidate.

    aioice's `get_host_addresses` leaves out 127.0.0.1, so in a network namespace that has nothing but `lo`
    (how the browser tests run, hermetic and offline) the server would have no candidate at all and the
    browser's connection could never form. `Connection.gather_candidates` looks the function up in the
    `aioice.ice` module on each call, so replacing it there is enough; doing it twice is harmless.
    """
    import aioice.ice

    original = aioice.ice.get_host_addresses
    if getattr(original, "fercore_loopback", False):
        return

    def host_addresses_with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        if use_ipv4 and LOOPBACK_ADDRESS not in addresses:
            addresses.append(LOOPBACK_ADDRESS)
        return addresses

    host_addresses_with_loopback.fercore_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = host_addresses_with_loopback


def apply_test_settings() -> None:
    """Apply the test-only switches the environment asks for (none in normal use). Call before a stream starts."""
    if loopback_requested():
        offer_loopback_candidates()
