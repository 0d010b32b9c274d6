"""The simulated multipathd: its configuration (multipath.conf and conf.d drop-ins), its JSON, and
its command socket, spoken as multipath-tools 0.9.4 speaks it (libmpathcmd's framing, uxlsnr's
replies), so the daemon's real multipathd client talks to it unchanged.

The socket is served from threads of its own, never from the daemon's event loop: a multipathd
that hangs must hang its clients, not the daemon. What multipathd does to maps and paths lives
with the rest of the SAN (multipath.py); this module only speaks for it.

Framing (libmpathcmd): a native size_t holding len(text) + 1, then the text and a NUL, both ways.
Replies as uxlsnr's default_reply: "ok\n", "fail\n", "timeout\n" (a locked command that could
not get multipathd's lock within uxsock_timeout, e.g. during a reconfigure), or a handler's text.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .multipath import MultipathMixin

log = logging.getLogger(__name__)

SOCKET_NAME = "multipathd.sock"
MAX_CMD = 4096                      # longer commands are not multipathd's: the client is cut off
MAX_REPLY = 32 << 20                # libmpathcmd's MAX_REPLY_LEN
_LEN = struct.Struct("@N")          # native size_t ("=N" is refused: N is native-only)
MODES = ("running", "absent", "hung", "garbage")
GARBAGE = "\x7fELF\x02\x01 this is not multipathd's answer {\n"

DEFAULT_CONF = """\
# The simulated host's /etc/multipath.conf (the admin's file; sanbusd writes only conf.d/).
defaults {
\tuser_friendly_names yes
\tfind_multipaths strict
}
"""

# -- configuration --------------------------------------------------------------------------------

FIND_MULTIPATHS = {"no": "off", "off": "off", "0": "off", "yes": "on", "on": "on", "1": "on",
                   "greedy": "greedy", "smart": "smart", "strict": "strict"}
PG_POLICIES = ("failover", "multibus", "group_by_prio", "group_by_serial",
               "group_by_node_name", "group_by_tpg")


@dataclass(slots=True)
class MpathConf:
    """What the simulated multipathd takes from multipath.conf (defaults, blacklist, exceptions);
    everything else in the file is read past, as multipathd ignores what it does not know."""
    user_friendly_names: bool = False       # multipathd's built-in default, not the sim file's
    find_multipaths: str = "strict"         # off | on | greedy | smart | strict
    path_grouping_policy: str = "group_by_prio"
    no_path_retry: str = ""                 # "" (unset) | fail | queue | N
    failback: str = ""
    blacklist: list[str] = field(default_factory=list)          # wwid regexes
    exceptions: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)       # multipaths { multipath { } }
    errors: list[str] = field(default_factory=list)             # what was read past, and why

    def blacklisted(self, wwid: str) -> bool:
        """filter_wwid(): an exception wins over the blacklist."""
        if any(_search(rx, wwid) for rx in self.exceptions):
            return False
        return any(_search(rx, wwid) for rx in self.blacklist)

    @property
    def features(self) -> str:
        return "1 queue_if_no_path" if self.no_path_retry not in ("", "fail") else "0"

    @property
    def queueing(self) -> str:
        """print.c's %Q."""
        v = self.no_path_retry
        if v == "":
            return "-"
        if v == "fail":
            return "off"
        if v == "queue":
            return "on"
        return f"{v} chk"


def _search(rx: str, text: str) -> bool:
    try:
        return re.search(rx, text) is not None
    except re.error:
        return False                # regcomp failed: multipathd drops the entry


@dataclass(slots=True)
class _Section:
    name: str
    entries: list[tuple[str, str]] = field(default_factory=list)
    children: list["_Section"] = field(default_factory=list)


def _tokens(text: str) -> list[list[str]]:
    """multipath.conf's lexer: one list of words per line, "quoted words" kept whole, # and !
    starting comments outside quotes."""
    lines = []
    for raw in text.splitlines():
        words: list[str] = []
        i, n = 0, len(raw)
        while i < n:
            c = raw[i]
            if c.isspace():
                i += 1
            elif c in "#!":
                break
            elif c == '"':
                j = raw.find('"', i + 1)
                j = n if j < 0 else j
                words.append(raw[i + 1:j])
                i = j + 1
            elif c in "{}":
                words.append(c)
                i += 1
            else:
                j = i
                while j < n and not raw[j].isspace() and raw[j] not in '{}"#!':
                    j += 1
                words.append(raw[i:j])
                i = j
        if words:
            lines.append(words)
    return lines


def parse_conf_sections(text: str) -> list[_Section]:
    """The file as nested sections, tolerantly: a stray "}" or an unclosed section is read past
    (multipathd logs and carries on)."""
    root = _Section("")
    stack = [root]
    for line in _tokens(text):
        words: list[str] = []
        for w in line + ["\n"]:            # braces and line ends close an entry
            if w == "{":
                sec = _Section(words[0] if words else "")
                stack[-1].children.append(sec)
                stack.append(sec)
                words = []
            elif w in ("}", "\n"):
                if words:
                    stack[-1].entries.append((words[0], " ".join(words[1:])))
                    words = []
                if w == "}" and len(stack) > 1:
                    stack.pop()
            else:
                words.append(w)
    return root.children


def apply_conf_text(conf: MpathConf, text: str, where: str) -> None:
    for sec in parse_conf_sections(text):
        if sec.name == "defaults":
            for key, value in sec.entries:
                _apply_default(conf, key, value, where)
        elif sec.name in ("blacklist", "blacklist_exceptions"):
            target = conf.blacklist if sec.name == "blacklist" else conf.exceptions
            for key, value in sec.entries:
                if key == "wwid":
                    target.append(value)
        elif sec.name == "multipaths":
            for mp in sec.children:
                d = dict(mp.entries)
                if d.get("wwid") and d.get("alias"):
                    conf.aliases[d["wwid"]] = d["alias"]


def _apply_default(conf: MpathConf, key: str, value: str, where: str) -> None:
    v = value.strip().lower()
    if key == "user_friendly_names":
        if v in ("yes", "no"):
            conf.user_friendly_names = v == "yes"
        else:
            conf.errors.append(f"{where}: invalid user_friendly_names {value!r}")
    elif key == "find_multipaths":
        if v in FIND_MULTIPATHS:
            conf.find_multipaths = FIND_MULTIPATHS[v]
        else:
            conf.errors.append(f"{where}: invalid find_multipaths {value!r}")
    elif key == "path_grouping_policy":
        if v in PG_POLICIES:
            conf.path_grouping_policy = v
        else:
            conf.errors.append(f"{where}: invalid path_grouping_policy {value!r}")
    elif key == "no_path_retry":
        if v in ("fail", "queue") or v.isdigit():
            conf.no_path_retry = v
        else:
            conf.errors.append(f"{where}: invalid no_path_retry {value!r}")
    elif key == "failback":
        conf.failback = v


def conf_files(etc: Path) -> list[Path]:
    """multipath.conf, then conf.d/*.conf in alphabetical order: later ones override."""
    files = [etc / "multipath.conf"]
    d = etc / "multipath" / "conf.d"
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.name.endswith(".conf") and p.is_file())
    return files


def load_conf(etc: Path) -> MpathConf:
    conf = MpathConf()
    for path in conf_files(etc):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        apply_conf_text(conf, text, str(path))
    for e in conf.errors:
        log.warning("simulated multipathd: %s (ignored)", e)
    return conf


# -- the JSON, as print.c lays it out ------------------------------------------------------------

@dataclass(slots=True)
class PathView:
    dev: str
    dev_t: str
    dm_st: str                      # active | failed
    dev_st: str                     # running | offline
    chk_st: str                     # ready | faulty
    pri: int
    host_wwnn: str = "[undef]"
    target_wwnn: str = "[undef]"
    host_wwpn: str = "[undef]"
    target_wwpn: str = "[undef]"
    host_adapter: str = "[undef]"
    lun_hex: str = "0x0000000000000000"


@dataclass(slots=True)
class GroupView:
    pri: int
    dm_st: str                      # active | enabled
    paths: list[PathView]
    selector: str = "service-time 0"


@dataclass(slots=True)
class MapView:
    name: str
    uuid: str
    sysfs: str
    failback: str
    queueing: str
    features: str
    hwhandler: str
    action: str
    path_faults: int
    vend: str
    prod: str
    rev: str
    map_loads: int
    groups: list[GroupView]

    @property
    def active_paths(self) -> int:
        """count_active_paths(): what "paths" says (never a count of all paths)."""
        return sum(1 for g in self.groups for p in g.paths if p.chk_st == "ready")


_IND = "   "


def _path_json(p: PathView) -> str:
    i = _IND * 4
    return ("{\n"
            f'{i}"dev" : "{p.dev}",\n{i}"dev_t" : "{p.dev_t}",\n'
            f'{i}"dm_st" : "{p.dm_st}",\n{i}"dev_st" : "{p.dev_st}",\n'
            f'{i}"chk_st" : "{p.chk_st}",\n{i}"checker" : "tur",\n{i}"pri" : {p.pri},\n'
            f'{i}"host_wwnn" : "{p.host_wwnn}",\n{i}"target_wwnn" : "{p.target_wwnn}",\n'
            f'{i}"host_wwpn" : "{p.host_wwpn}",\n{i}"target_wwpn" : "{p.target_wwpn}",\n'
            f'{i}"host_adapter" : "{p.host_adapter}",\n{i}"lun_hex" : "{p.lun_hex}",\n'
            f'{i}"marginal_st" : "normal"\n')


def _map_fields_json(m: MapView, last: bool) -> str:
    i = _IND * 2
    out = ["{\n"
           f'{i}"name" : "{m.name}",\n{i}"uuid" : "{m.uuid}",\n{i}"sysfs" : "{m.sysfs}",\n'
           f'{i}"failback" : "{m.failback}",\n{i}"queueing" : "{m.queueing}",\n'
           f'{i}"paths" : {m.active_paths},\n{i}"write_prot" : "rw",\n'
           f'{i}"dm_st" : "active",\n{i}"features" : "{m.features}",\n'
           f'{i}"hwhandler" : "{m.hwhandler}",\n{i}"action" : "{m.action}",\n'
           f'{i}"path_faults" : {m.path_faults},\n{i}"vend" : "{m.vend}",\n'
           f'{i}"prod" : "{m.prod}",\n{i}"rev" : "{m.rev}",\n{i}"switch_grp" : 0,\n'
           f'{i}"map_loads" : {m.map_loads},\n{i}"total_q_time" : 0,\n{i}"q_timeouts" : 0,\n',
           f'{i}"path_groups": [']
    g_ind = _IND * 3
    for gi, g in enumerate(m.groups):
        out.append("{\n"
                   f'{g_ind}"selector" : "{g.selector}",\n{g_ind}"pri" : {g.pri},\n'
                   f'{g_ind}"dm_st" : "{g.dm_st}",\n{g_ind}"marginal_st" : "normal",\n'
                   f'{g_ind}"group" : {gi + 1},\n{g_ind}"paths": [')
        for pi, p in enumerate(g.paths):
            out.append(_path_json(p) + g_ind + ("}" if pi + 1 == len(g.paths) else "},"))
        out.append("]\n" + i + ("}" if gi + 1 == len(m.groups) else "},"))
    out.append("]\n" + _IND + ("}" if last else "},"))
    return "".join(out)


_HEADER = '{\n   "major_version": 0,\n   "minor_version": 1,\n'


def maps_json(maps: list[MapView]) -> str:
    """snprint_multipath_topology_json()."""
    body = "".join(_map_fields_json(m, k + 1 == len(maps)) for k, m in enumerate(maps))
    return _HEADER + _IND + '"maps": [' + body + "]\n}\n"


def map_json(m: MapView) -> str:
    """snprint_multipath_map_json()."""
    return _HEADER + _IND + '"map":' + _map_fields_json(m, True) + "\n}\n"


# -- commands ---------------------------------------------------------------------------------------

# cli.c's keywords: word -> (code, takes a parameter)
_KEYS: dict[str, tuple[str, bool]] = {
    "list": ("list", False), "show": ("list", False), "add": ("add", False),
    "remove": ("del", False), "del": ("del", False), "reconfigure": ("reconfigure", False),
    "paths": ("paths", False), "maps": ("maps", False), "multipaths": ("maps", False),
    "path": ("path", True), "map": ("map", True), "multipath": ("map", True),
    "daemon": ("daemon", False), "status": ("status", False), "json": ("json", False),
    "all": ("all", False), "topology": ("topology", False), "config": ("config", False),
    "raw": ("raw", False), "format": ("format", True), "stats": ("stats", False),
    "blacklist": ("blacklist", False), "devices": ("devices", False),
    "wildcards": ("wildcards", False), "local": ("local", False), "group": ("group", True),
    "switch": ("switch", False), "switchgroup": ("switch", False), "suspend": ("suspend", False),
    "resume": ("resume", False), "reinstate": ("reinstate", False), "fail": ("fail", False),
    "resize": ("resize", False), "reset": ("reset", False), "reload": ("reload", False),
    "quit": ("quit", False), "exit": ("quit", False), "shutdown": ("shutdown", False),
}

HELP = """multipathd v0.9.4 (simulated)
CLI commands reference:
 list|show maps|multipaths json
 list|show map|multipath $map json
 list|show daemon
 list|show status
 list|show paths raw format $format
 add map|multipath $map
 del|remove map|multipath $map
 reconfigure
 reconfigure all
"""


@dataclass(slots=True)
class Parsed:
    codes: tuple[str, ...]
    params: dict[str, str]


def parse_command(text: str) -> Parsed | str:
    """get_cmdvec(): the keywords and their parameters, or the reply for a command that does
    not parse (genhelp's first line and the help; "fail" for an unknown word not at the end)."""
    # get_strvec(): blanks separate words, except inside double quotes.
    words = [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', text)]
    codes: list[str] = []
    params: dict[str, str] = {}
    pending = ""
    for i, w in enumerate(words):
        if pending:
            params[pending] = w
            pending = ""
            continue
        key = _KEYS.get(w)
        if key is None:
            return f"{text}: not found\n" + HELP if i == len(words) - 1 else "fail\n"
        codes.append(key[0])
        if key[1]:
            pending = key[0]
    if pending or not codes:
        return f"{text}: Missing argument\n" + HELP
    return Parsed(tuple(codes), params)


# -- the server -----------------------------------------------------------------------------------

@dataclass(slots=True)
class _Handler:
    fn: Callable[[Parsed], str]
    locked: bool = True             # needs multipathd's lock (vecs->lock)


class MultipathdServer:
    """multipathd's command socket at `path`, answering for the SAN `san`. Modes (set by the SAN
    admin): running; absent (nothing listens: connecting is refused); hung (commands are read,
    never answered); garbage (a well-framed reply that is not multipathd's)."""

    def __init__(self, san: "MultipathMixin", path: str | os.PathLike) -> None:
        self.san = san
        self.path = str(path)
        self.mode = "running"
        self.lock = threading.Lock()             # multipathd's vecs->lock
        self._state = threading.Condition()      # guards mode, listener, connections
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._stopped = False
        self._configuring = 0
        self._handlers: dict[tuple[str, ...], _Handler] = {
            ("list", "maps", "json"): _Handler(self._show_maps_json),
            ("list", "map", "json"): _Handler(self._show_map_json),
            ("list", "daemon"): _Handler(self._show_daemon, locked=False),
            ("list", "status"): _Handler(self._show_status),
            ("list", "paths", "raw", "format"): _Handler(
                lambda p: san.mpd_paths_raw(p.params["format"])),
            ("add", "map"): _Handler(lambda p: san.mpd_add_map(p.params["map"])),
            ("del", "map"): _Handler(lambda p: san.mpd_del_map(p.params["map"])),
            ("reconfigure",): _Handler(self._reconfigure, locked=False),
            ("reconfigure", "all"): _Handler(self._reconfigure, locked=False),
        }

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        with self._state:
            self._stopped = False
            self._listen()

    def close(self) -> None:
        """Stop listening, drop every client, remove the socket file."""
        with self._state:
            self._stopped = True
            self._unlisten()
            self._drop_clients()
            self._state.notify_all()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def set_mode(self, mode: str) -> None:
        if mode == "restart":
            self.restart()
            return
        if mode not in MODES:
            raise ValueError(f"multipathd mode must be one of {', '.join(MODES)} or restart")
        with self._state:
            old, self.mode = self.mode, mode
            if mode == "absent":
                self._unlisten()
                self._drop_clients()        # a daemon that exits closes its clients
            elif old == "absent" and not self._stopped:
                self._listen()
            self._state.notify_all()        # hung clients let go when the mode changes

    def restart(self) -> None:
        """Gone for restart_delay seconds (clients are refused), then back with its state."""
        self.set_mode("absent")
        t = threading.Timer(self.san.fabric.multipathd.restart_delay, self._restarted)
        t.daemon = True
        t.start()

    def _restarted(self) -> None:
        with self._state:
            if self.mode == "absent" and not self._stopped:
                self.set_mode("running")

    def _listen(self) -> None:
        if self._listener is not None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.path)
        os.chmod(self.path, 0o600)          # multipathd answers root only
        s.listen(64)
        s.settimeout(0.1)                   # the accept loop looks at the mode this often
        self._listener = s
        threading.Thread(target=self._accept_loop, args=(s,), name="sim-multipathd",
                         daemon=True).start()

    def _unlisten(self) -> None:
        # The socket file stays: connecting to it is refused, as to a dead abstract socket.
        # shutdown first: a close alone leaves it listening while accept() still waits in it.
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None

    def _drop_clients(self) -> None:
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._conns.clear()

    def _accept_loop(self, s: socket.socket) -> None:
        while True:
            with self._state:
                if self._listener is not s:
                    return
            try:
                conn, _ = s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._state:
                if self._listener is not s:
                    conn.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=self._client, args=(conn,), name="sim-multipathd-client",
                             daemon=True).start()

    # -- one client --------------------------------------------------------------------------

    def _client(self, conn: socket.socket) -> None:
        try:
            while True:
                cmd = self._read_command(conn)
                if cmd is None:
                    return
                if not self._answer(conn, cmd):
                    return
        except OSError:
            pass
        finally:
            with self._state:
                self._conns.discard(conn)
            conn.close()

    @staticmethod
    def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _read_command(self, conn: socket.socket) -> str | None:
        head = self._recv_exact(conn, _LEN.size)
        if head is None:
            return None
        (n,) = _LEN.unpack(head)
        if n <= 0 or n > MAX_CMD:
            return None                     # uxlsnr: invalid command length, connection reset
        data = self._recv_exact(conn, n)
        if data is None:
            return None
        return data.split(b"\0", 1)[0].decode(errors="replace")

    def _answer(self, conn: socket.socket, cmd: str) -> bool:
        """Reply to one command; False when the connection is to be dropped."""
        mode = self.mode
        if mode == "hung":
            with self._state:
                while self.mode == "hung" and conn in self._conns and not self._stopped:
                    self._state.wait(0.5)
            return False                    # the hang ends with the connection
        if mode == "absent" or self._stopped:
            return False
        reply = GARBAGE if mode == "garbage" else self.reply(cmd)
        data = reply.encode() + b"\0"
        conn.sendall(_LEN.pack(len(data)) + data)
        return True

    # -- commands ------------------------------------------------------------------------------

    def reply(self, cmd: str) -> str:
        """The text multipathd answers to `cmd` (without the framing)."""
        parsed = parse_command(cmd)
        if isinstance(parsed, str):
            return parsed
        h = self._handlers.get(parsed.codes)
        if h is None:
            return f"{cmd}: not supported by the simulated multipathd\n" + HELP
        if not h.locked:
            return h.fn(parsed)
        # uxlsnr waits for the lock until the client's time (uxsock_timeout) is up.
        if not self.lock.acquire(timeout=self.san.fabric.multipathd.uxsock_timeout):
            return "timeout\n"
        try:
            return h.fn(parsed)
        except Exception:  # noqa: BLE001 - a handler's bug is a "fail", not a dead server
            log.exception("simulated multipathd: %r failed", cmd)
            return "fail\n"
        finally:
            self.lock.release()

    def _show_maps_json(self, p: Parsed) -> str:
        return maps_json(self.san.mpd_views())

    def _show_map_json(self, p: Parsed) -> str:
        view = self.san.mpd_view(p.params["map"])
        return "fail\n" if view is None else map_json(view)

    def _show_daemon(self, p: Parsed) -> str:
        return f"pid {os.getpid()} {'configure' if self._configuring else 'idle'}\n"

    def _show_status(self, p: Parsed) -> str:
        return self.san.mpd_status()

    def _reconfigure(self, p: Parsed) -> str:
        """cli_reconfigure: "ok" at once; the reconfigure runs holding the lock, so commands
        meanwhile wait for it (and answer "timeout" if it outlasts uxsock_timeout)."""
        got = self.lock.acquire(timeout=0.05)
        with self._state:
            self._configuring += 1
        threading.Thread(target=self._reconfigure_run, args=(got,), name="sim-multipathd-reconf",
                         daemon=True).start()
        return "ok\n"

    def _reconfigure_run(self, locked: bool) -> None:
        if not locked:
            self.lock.acquire()             # one already runs: this one follows it
        try:
            delay = self.san.fabric.multipathd.reconfigure_delay
            if delay > 0:
                with self._state:
                    self._state.wait_for(lambda: self._stopped, timeout=delay)
            if not self._stopped:
                self.san.mpd_reconfigure()
        except Exception:  # noqa: BLE001
            log.exception("simulated multipathd: reconfigure failed")
        finally:
            with self._state:
                self._configuring -= 1
            self.lock.release()


__all__ = ["DEFAULT_CONF", "MODES", "MapView", "GroupView", "PathView", "MpathConf",
           "MultipathdServer", "load_conf", "map_json", "maps_json", "parse_command",
           "SOCKET_NAME"]
