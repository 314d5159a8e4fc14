"""`workers.broker_transport` overrides kombu's Redis read and restore methods with copies
that read envelopes safely. When kombu changes one of them, these fail: re-read kombu's new
version, carry its change into ours, then update the digest."""

from __future__ import annotations

import hashlib
import inspect

import pytest
from kombu.transport import redis

# sha256 of kombu 5.7.0's source of each method our Channel / QoS replaces.
COPIED = {
    "Channel._brpop_read": "c42518699709f2df90f55a048fe6346612ae5527e5c4a6819f2c0920dc62088f",
    "Channel._get": "be26a9f1eb4cf8da2aa65f4815a1709bf80b4434b064d3d7146872d318ad506c",
    "Channel._restore": "92e63e38835b6592b4f685a05dcdc6b3c289fffa5e17fbd7343383fe272d2230",
    "QoS.restore_by_tag": "58e161d81b6fe18d1fe73d53d13e6359271bcc249d0da58ee737c6775d51ceb8",
}


@pytest.mark.parametrize("name", sorted(COPIED))
def test_the_kombu_methods_we_copied_are_the_ones_installed(name: str) -> None:
    owner, method = name.split(".")
    source = inspect.getsource(getattr(getattr(redis, owner), method))
    assert hashlib.sha256(source.encode()).hexdigest() == COPIED[name], (
        f"kombu's {name} changed: compare it with workers/broker_transport.py"
    )
