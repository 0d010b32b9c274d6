"""MultipathdClient against a tiny server speaking multipathd's socket protocol (a native size_t
length, counting the text and its NUL, then the text, both ways): replies, "timeout" retries,
hangs, absence, garbage, and the abstract-socket address. Every wait is bounded."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from sanbusd.backend.multipathd import (MAX_REPLY, MultipathdAbsent, MultipathdClient,
                                        MultipathdError, MultipathdGarbage, MultipathdTimeout)

LEN = struct.Struct("@N")
SAMPLES = Path(__file__).resolve().parent / "samples" / "multipathd"
SHOW_MAPS = (SAMPLES / "sample-show-maps.json").read_text()        # multipath-tools 0.9.4
CUT_MAPS = (SAMPLES / "sample-ops-show-maps-cut.txt").read_text()  # a reply cut short


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def send_reply(conn: socket.socket, text: str) -> None:
    data = text.encode() + b"\0"                    # as multipathd: the NUL is counted
    conn.sendall(LEN.pack(len(data)) + data)


class FakeMultipathd:
    """Accepts connections one at a time; for each, reads one framed command, records it, and
    calls handler(server, conn, command)."""

    def __init__(self, address: str | bytes, handler) -> None:
        self.handler = handler
        self.raw: list[bytes] = []                  # each command as received, framing included
        self.commands: list[str] = []
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    header = _recv_exact(conn, LEN.size)
                    (n,) = LEN.unpack(header)
                    body = _recv_exact(conn, n)
                    self.raw.append(header + body)
                    self.commands.append(body.rstrip(b"\0").decode())
                    self.handler(self, conn, self.commands[-1])
                except (OSError, EOFError):
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        assert not self.thread.is_alive()


@pytest.fixture
def serve(tmp_path_factory):
    """serve(handler) -> (server, client) on a file socket (a short path: sun_path is 108
    bytes); serve(handler, abstract=True) on an abstract one."""
    servers = []
    sockdir = tmp_path_factory.mktemp("mpd")

    def start(handler, abstract=False, timeout=5.0, retry_delay=0.02):
        if abstract:
            name = f"sanbusd-test-mpd-{os.getpid()}-{os.urandom(4).hex()}"
            server, address = FakeMultipathd(b"\0" + name.encode(), handler), "@" + name
        else:
            address = str(sockdir / f"s{len(servers)}.sock")
            server = FakeMultipathd(address, handler)
        servers.append(server)
        return server, MultipathdClient(address, timeout=timeout, retry_delay=retry_delay)

    yield start
    for s in servers:
        s.close()


def replying(*replies):
    """A handler answering each connection with the next reply (the last one repeats)."""
    def handler(server, conn, cmd):
        send_reply(conn, replies[min(len(server.commands), len(replies)) - 1])
    return handler


def timed(fn, *args, **kw):
    t0 = time.monotonic()
    try:
        return fn(*args, **kw), time.monotonic() - t0
    except Exception as e:                          # noqa: BLE001 - returned for the test
        return e, time.monotonic() - t0


# -- the protocol -------------------------------------------------------------------------------

def test_a_command_is_framed_as_libmpathcmd_does_and_the_reply_unframed(serve):
    server, client = serve(replying("multipathd v0.9.4: running\n"))
    assert client.command("show daemon") == "multipathd v0.9.4: running"
    assert server.raw == [LEN.pack(len("show daemon") + 1) + b"show daemon\0"]
    assert client.running() == "multipathd v0.9.4: running"
    client.reconfigure()
    client.add_map("1Linux_scsi_debug_2000")
    client.del_map("mpatha")
    assert server.commands[1:] == ["show daemon", "reconfigure", "add map 1Linux_scsi_debug_2000",
                                   "del map mpatha"]


def test_a_large_reply_is_read_whole(serve):
    big = "x" * (3 * 1024 * 1024 + 17)               # more than one recv's worth
    _, client = serve(replying(big))
    assert client.command("show paths") == big


def test_maps_and_map_parse_the_real_json(serve):
    one = json.dumps({"major_version": 0, "minor_version": 1,
                      "map": json.loads(SHOW_MAPS)["maps"][0]}, indent=3)
    server, client = serve(lambda srv, conn, cmd: send_reply(
        conn, SHOW_MAPS if cmd == "show maps json" else
        one if cmd == "show map mpatha json" else "fail\n"))
    maps = client.maps()
    assert sorted(maps) == ["dm-0", "dm-1"]
    assert maps["dm-0"].name == "mpatha" and [p.dev for p in maps["dm-1"].paths] == ["sda", "sdd"]
    m = client.map("mpatha")
    assert (m.name, m.wwid, m.dm) == ("mpatha", "1Linux_scsi_debug_2000", "dm-0")
    assert client.map("mpathz") is None             # multipathd does not know it: "fail"
    assert server.commands == ["show maps json", "show map mpatha json", "show map mpathz json"]


@pytest.mark.parametrize("reply", ["fail", "ok", CUT_MAPS, '{"maps": 1}', "[]"])
def test_maps_on_anything_but_a_map_list_is_garbage(serve, reply):
    _, client = serve(replying(reply))
    with pytest.raises(MultipathdGarbage, match="multipathd"):
        client.maps()


def test_map_on_garbage_is_garbage(serve):
    _, client = serve(replying("not json at all"))
    with pytest.raises(MultipathdGarbage, match="not JSON"):
        client.map("mpatha")


@pytest.mark.parametrize("name", ["x y", "mpatha\n", "a\tb", "", 'a"b', "a'b", "a\0b",
                                  "m" * 257])
def test_no_blank_or_quote_reaches_multipathd(serve, name):
    server, client = serve(replying("ok"))
    for call in (client.map, client.add_map, client.del_map):
        with pytest.raises(ValueError, match="cannot be passed to multipathd"):
            call(name)
    assert server.commands == []


# -- retries and deadlines ----------------------------------------------------------------------

def test_timeout_replies_are_retried(serve):
    server, client = serve(replying("timeout\n", "timeout\n", "ok\n"))
    assert client.command("reconfigure") == "ok"
    assert server.commands == ["reconfigure"] * 3


def test_always_timeout_gives_up_at_the_deadline(serve):
    server, client = serve(replying("timeout\n"), timeout=1, retry_delay=0.1)
    err, took = timed(client.command, "show maps json")
    assert isinstance(err, MultipathdTimeout), err
    assert "timeout" in str(err) and "try again" in str(err)
    assert 0.7 <= took <= 2.0
    assert len(server.commands) >= 3                # it did retry


def test_a_server_that_never_answers_times_out_at_the_deadline(serve):
    hung = threading.Event()

    def never(server, conn, cmd):
        hung.set()
        server.stop.wait(10)                         # until the test ends

    server, client = serve(never, timeout=1)
    err, took = timed(client.command, "show maps json")
    assert isinstance(err, MultipathdTimeout), err
    assert "did not answer" in str(err)
    assert hung.is_set() and server.commands == ["show maps json"]
    assert 0.9 <= took <= 2.0                        # the deadline, and not much more
    # a per-call timeout overrides the client's
    _, took = timed(client.command, "show maps json", timeout=0.3)
    assert took <= 1.3


def test_a_reply_that_stops_half_way_times_out(serve):
    def half(server, conn, cmd):
        conn.sendall(LEN.pack(100) + b"x" * 10)
        server.stop.wait(10)

    _, client = serve(half, timeout=1)
    err, took = timed(client.command, "show maps json")
    assert isinstance(err, MultipathdTimeout), err
    assert took <= 2.0


def test_no_multipathd_is_absent(tmp_path):
    client = MultipathdClient(str(tmp_path / "nothing.sock"), timeout=0.5, retry_delay=0.05)
    err, took = timed(client.command, "show daemon")
    assert isinstance(err, MultipathdAbsent), err
    assert "not running" in str(err)
    assert took <= 1.5


def test_an_absent_abstract_socket_is_absent():
    client = MultipathdClient(f"@sanbusd-test-nobody-{os.urandom(6).hex()}", timeout=0.3,
                              retry_delay=0.05)
    err, took = timed(client.maps)
    assert isinstance(err, MultipathdAbsent), err
    assert took <= 1.3


def test_a_refused_connection_is_retried_until_multipathd_is_back(tmp_path_factory):
    """multipathd restarting: its socket file is there, nobody listens; then it listens."""
    path = str(tmp_path_factory.mktemp("mpd") / "r.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)                                  # bound, not listening: ECONNREFUSED
    client = MultipathdClient(path, timeout=5, retry_delay=0.05)
    with pytest.raises(MultipathdAbsent):
        client.command("show daemon", timeout=0.3)
    servers = []

    def restart():
        dead.close()
        os.unlink(path)
        servers.append(FakeMultipathd(path, replying("ok")))

    timer = threading.Timer(0.3, restart)
    timer.start()
    try:
        reply, took = timed(client.command, "reconfigure")
        assert reply == "ok" and took <= 3
    finally:
        timer.join(5)
        for s in servers:
            s.close()


# -- garbage ------------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, MAX_REPLY, MAX_REPLY + 1, 33 * 1024 * 1024, 2**63])
def test_a_bad_reply_length_is_garbage(serve, length):
    def bad(server, conn, cmd):
        conn.sendall(LEN.pack(length) + b"ok\0")

    _, client = serve(bad, timeout=2)
    err, took = timed(client.command, "show maps json")
    assert isinstance(err, MultipathdGarbage), err
    assert f"reply length of {length}" in str(err)
    assert took < 1.0                                # not retried, not waited for


def test_a_connection_closed_mid_reply_is_garbage(serve):
    def cut(server, conn, cmd):
        conn.sendall(LEN.pack(len(SHOW_MAPS) + 1) + SHOW_MAPS[:500].encode())

    _, client = serve(cut, timeout=2)
    err, took = timed(client.maps)
    assert isinstance(err, MultipathdGarbage), err
    assert "in the middle of its reply" in str(err)
    assert took < 1.0


def test_a_connection_closed_in_the_length_is_garbage(serve):
    _, client = serve(lambda server, conn, cmd: conn.sendall(b"\x05\x00"), timeout=2)
    with pytest.raises(MultipathdGarbage, match="in the middle of its reply"):
        client.command("show maps json")


def test_errors_are_multipathd_errors():
    for cls in (MultipathdAbsent, MultipathdTimeout, MultipathdGarbage):
        assert issubclass(cls, MultipathdError)


# -- the abstract socket --------------------------------------------------------------------------

def test_the_abstract_address_form_works(serve):
    server, client = serve(replying(SHOW_MAPS), abstract=True)
    assert client.address.startswith("@")
    assert sorted(client.maps()) == ["dm-0", "dm-1"]
    assert server.commands == ["show maps json"]
