"""A client of multipathd's command socket (what `multipathd show maps json` speaks), bounded.

multipathd listens on the abstract unix socket @/org/kernel/linux/storage/multipathd. A
command is a native size_t length (the text plus its NUL) and the text; the reply is framed
the same way. The socket is spoken directly rather than by running `multipathd -k`: that
client gives up after 4 s, too short for `show maps json` with thousands of paths, and a
process per question is wasteful. multipathd answers "timeout" when it cannot take its lock
(during a reconfigure, say): the command is tried again until the deadline.

Every call blocks (a socket with a deadline): run it from a worker thread, never on the loop.
The simulated SAN serves the same protocol on a file socket, so this code talks to both.
"""

from __future__ import annotations

import errno
import socket
import struct
import time

from ..model.multipath import (PATHS_COMMAND, STATES_COMMAND, MapStatus, parse_map_json,
                               parse_maps_json, parse_path_states, parse_paths_raw)

REAL_SOCKET = "@/org/kernel/linux/storage/multipathd"
MAX_REPLY = 32 * 1024 * 1024        # multipathd's own MAX_REPLY_LEN
_LEN = struct.Struct("@N")          # native size_t, as libmpathcmd sends it


class MultipathdError(Exception):
    """multipathd could not be asked; the message says why and what to do."""


class MultipathdAbsent(MultipathdError):
    pass


class MultipathdTimeout(MultipathdError):
    pass


class MultipathdGarbage(MultipathdError):
    pass


def _address(address: str) -> str | bytes:
    return b"\0" + address[1:].encode() if address.startswith("@") else address


class MultipathdClient:
    def __init__(self, address: str = REAL_SOCKET, timeout: float = 30.0,
                 retry_delay: float = 0.2, absent_grace: float = 1.0) -> None:
        self.address = address
        self.timeout = timeout
        self.retry_delay = retry_delay
        # A refused connection is retried this long: enough for a restart to take its socket
        # again, short enough that an absent multipathd is reported at once.
        self.absent_grace = absent_grace

    def command(self, cmd: str, timeout: float | None = None) -> str:
        """Send one command; its reply without the trailing newline. Retries "timeout"
        replies and refused connections (multipathd restarting) until the deadline."""
        start = time.monotonic()
        deadline = start + (timeout or self.timeout)
        while True:
            try:
                reply = self._once(cmd, deadline)
            except MultipathdAbsent:
                now = time.monotonic() + self.retry_delay
                if now >= deadline or now >= start + self.absent_grace:
                    raise
            else:
                if reply != "timeout":
                    return reply
                if time.monotonic() + self.retry_delay >= deadline:
                    raise MultipathdTimeout(
                        f"multipathd kept answering \"timeout\" to {cmd!r} (it is busy, e.g. "
                        "reconfiguring); try again later")
            time.sleep(self.retry_delay)

    def _once(self, cmd: str, deadline: float) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            self._connect(s, cmd, deadline)
            return self._ask(s, cmd, deadline)

    def each(self, cmds: list[str], timeout: float | None = None):
        """Several commands on one connection (multipathd serves them in turn): yields each
        reply. Each command has the whole `timeout`; a "timeout" reply is sent again."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            connected = False
            for cmd in cmds:
                deadline = time.monotonic() + (timeout or self.timeout)
                if not connected:
                    self._connect(s, cmd, deadline)
                    connected = True
                while True:
                    reply = self._ask(s, cmd, deadline)
                    if reply != "timeout":
                        break
                    if time.monotonic() + self.retry_delay >= deadline:
                        raise MultipathdTimeout(f"multipathd kept answering \"timeout\" to "
                                                f"{cmd!r}; try again later")
                    time.sleep(self.retry_delay)
                yield reply

    def _connect(self, s: socket.socket, cmd: str, deadline: float) -> None:
        try:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            s.connect(_address(self.address))
        except (ConnectionRefusedError, FileNotFoundError) as e:
            raise MultipathdAbsent(
                "multipathd is not running (start it: systemctl start multipathd)") from e
        except socket.timeout as e:
            raise MultipathdTimeout(f"multipathd did not take {cmd!r} in time; it may be hung "
                                    "(systemctl status multipathd)") from e
        except OSError as e:
            raise MultipathdError(f"cannot talk to multipathd: {e.strerror or e}") from e

    def _ask(self, s: socket.socket, cmd: str, deadline: float) -> str:
        data = cmd.encode() + b"\0"
        try:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            s.sendall(_LEN.pack(len(data)) + data)
            (length,) = _LEN.unpack(self._read(s, _LEN.size, deadline))
            if not 0 < length < MAX_REPLY:
                raise MultipathdGarbage(f"multipathd sent a reply length of {length}; is "
                                        "something else listening on its socket?")
            body = self._read(s, length, deadline)
        except socket.timeout as e:
            raise MultipathdTimeout(
                f"multipathd did not answer {cmd!r} in time; it may be hung "
                "(systemctl status multipathd)") from e
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE):
                raise MultipathdAbsent("multipathd closed the connection (restarting?)") from e
            raise MultipathdError(f"cannot talk to multipathd: {e.strerror or e}") from e
        return body.rstrip(b"\0").decode(errors="replace").rstrip("\n")

    @staticmethod
    def _read(s: socket.socket, n: int, deadline: float) -> bytes:
        chunks, got = [], 0
        while got < n:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(min(n - got, 1 << 20))
            if not chunk:
                raise MultipathdGarbage("multipathd closed the connection in the middle of "
                                        "its reply")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    # -- the commands sanbusd uses -------------------------------------------------------------

    def maps(self, timeout: float | None = None) -> dict[str, MapStatus]:
        return self._parse(parse_maps_json, self.command("show maps json", timeout))

    def map(self, name: str, timeout: float | None = None) -> MapStatus | None:
        """One map by name, WWID or dm-N; None if multipathd does not know it."""
        reply = self.command(f"show map {_word(name)} json", timeout)
        if reply in ("fail", ""):
            return None
        return self._parse(parse_map_json, reply)

    def paths(self, timeout: float | None = None) -> dict[str, str]:
        """{sdX: WWID as multipath groups it} of every path multipathd has (blacklisted
        ones are not its)."""
        return self._parse(parse_paths_raw, self.command(PATHS_COMMAND, timeout))

    def path_states(self, timeout: float | None = None) -> dict[str, tuple[str, str, str]]:
        """{sdX: (dm state, checker state, device state)}: compact, for polling."""
        return self._parse(parse_path_states, self.command(STATES_COMMAND, timeout))

    def running(self, timeout: float | None = None) -> str:
        return self.command("show daemon", timeout)

    def add_map(self, wwid: str) -> str:
        return self.command(f"add map {_word(wwid)}")

    def add_maps(self, wwids: list[str], progress=None) -> dict[str, str]:
        """`add map` for each WWID on one connection; progress(done) after each."""
        replies = {}
        for i, (wwid, reply) in enumerate(zip(wwids, self.each(
                [f"add map {_word(w)}" for w in wwids]))):
            replies[wwid] = reply
            if progress is not None:
                progress(i + 1)
        return replies

    def del_map(self, name: str) -> str:
        return self.command(f"del map {_word(name)}")

    def reconfigure(self) -> str:
        return self.command("reconfigure")

    @staticmethod
    def _parse(fn, reply: str):
        try:
            return fn(reply)
        except ValueError as e:
            raise MultipathdGarbage(str(e)) from None


def _word(arg: str) -> str:
    """multipathd splits commands on blanks: an argument must be one plain word."""
    if not arg or any(c.isspace() or c in "\0\"'" for c in arg) or len(arg) > 256:
        raise ValueError(f"{arg[:60]!r} cannot be passed to multipathd")
    return arg
