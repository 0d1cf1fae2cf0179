"""infra.netns: hosts that reach each other, a cut that holds both ways, a power loss, and
nothing left behind (needs root and iproute2's ip, as the multi-host test does)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from infra.netns import Host, Network, remove_stale

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

PORT = 8765


def connects(source: Host, target: Host) -> bool:
    """Whether a TCP connection from ``source`` to ``target``'s listener is accepted."""
    probe = f"import socket; socket.create_connection(({target.address!r}, {PORT}), timeout=2)"
    return subprocess.run(source.argv([sys.executable, "-c", probe]), check=False).returncode == 0


def ours() -> str:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    tag = f"tg{os.getpid()}"
    return "\n".join(
        line
        for line in (names.stdout + links.stdout).splitlines()
        if f"{tag}-" in line or f"{tag}b" in line or f"{tag}v" in line
    )


@pytest.fixture
def network() -> Iterator[Network]:
    network = Network.create(["a", "b"])
    try:
        yield network
    finally:
        network.close()


def listen(host: Host) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        host.argv([sys.executable, "-m", "http.server", "-b", host.address, str(PORT)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host.address, PORT)) == 0:  # from the root namespace
                return server
        if server.poll() is not None:
            break
        time.sleep(0.1)  # polling for the listener, with a bound
    raise AssertionError("the listener did not come up")


def test_hosts_reach_each_other_until_one_is_cut_off_and_again_once_healed(network):
    a, b = network["a"], network["b"]
    server = listen(b)
    try:
        assert connects(a, b)
        a.isolate([b])
        assert not connects(a, b)
        a.heal([b])
        assert connects(a, b)
    finally:
        server.kill()
        server.wait()


def test_a_host_that_loses_power_loses_its_processes_and_its_link(network):
    a, b = network["a"], network["b"]
    server = listen(b)
    assert b.power_off() == 1
    assert server.wait(timeout=10) == -9
    assert b.pids() == []
    b.power_on()
    server = listen(b)
    try:
        assert connects(a, b)
    finally:
        server.kill()
        server.wait()


def test_close_and_the_next_run_leave_nothing_behind():
    network = Network.create(["a"])
    assert ours()
    network.close()
    assert ours() == ""
    # A run killed before its close: what it made is named after its (now dead) pid.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = f"tg{dead.stdout.strip()}-x"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    remove_stale()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert stale not in listed.stdout
