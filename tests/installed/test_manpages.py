"""The man pages are generated from the parsers and the commented default configuration: every
option and subcommand argparse knows, and every configuration key, is in them, and they render
without a warning."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from sanbusd import config
from sanbusd.cli import man
from sanbusd.cli.sanctl import build_parser

TOP = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("man")
    assert man.main(["--outdir", str(out), "--conf", str(TOP / "data" / "sanbusd.conf")]) == 0
    return {p.name: p for p in out.iterdir()}


def _rendered(path: Path) -> str:
    """The page as text on one long line per paragraph, unhyphenated, whitespace collapsed."""
    r = subprocess.run(["groff", "-man", "-Tutf8", "-rLL=2000n", "-rHY=0", "-P-cbou",
                        str(path)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return " ".join(r.stdout.replace("\u2010", "-").split())


def _walk(parser: argparse.ArgumentParser, path: str):
    """(command path, option strings and positional names, subcommand names) for every parser."""
    opts, subs = [], []
    for a in parser._actions:
        if a.help == argparse.SUPPRESS:
            continue
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                subs.append(name)
                yield from _walk(sp, f"{path} {name}")
        elif a.option_strings:
            opts += a.option_strings
        elif a.choices is not None and a.metavar is None:
            opts.append("|".join(a.choices))
        else:
            opts.append(str(a.metavar or a.dest))
    yield path, opts, subs


def test_three_pages(pages):
    assert set(pages) == {"sanctl.1", "sanbusd.8", "sanbusd.conf.5"}


@pytest.mark.parametrize("name", ["sanctl.1", "sanbusd.8", "sanbusd.conf.5"])
def test_renders_without_warnings(pages, name):
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(pages[name])],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = subprocess.run(["man", "--warnings", "-l", str(pages[name])], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8",
                                                   "MANWIDTH": "80", "MANPAGER": "cat"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "NAME" in r.stdout and "SEE ALSO" in r.stdout


def test_sanctl_page_has_every_command_and_option(pages):
    text = _rendered(pages["sanctl.1"])
    seen = 0
    for path, opts, subs in _walk(build_parser(), "sanctl"):
        if path != "sanctl":
            assert f" {path} " in text, f"no section for {path!r}"
        for o in opts:
            assert o in text, f"{path}: {o} is not in sanctl(1)"
            seen += 1
    assert seen > 30
    for word in ("status", "monitor", "scan", "vhba", "multipath", "create-all", "flush",
                 "persist", "--no-user-interaction", "--remove-paths"):
        assert word in text


def test_sanctl_page_says_what_help_says(pages):
    """Every help text in the page is argparse's own, as `sanctl ... --help` prints it."""
    text = _rendered(pages["sanctl.1"])

    def helps(parser):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sp in a.choices.values():
                    yield from helps(sp)
            elif a.help and a.help != argparse.SUPPRESS:
                yield parser, a

    n = 0
    for parser, action in helps(build_parser()):
        expanded = " ".join(parser._get_formatter()._expand_help(action).split())
        help_out = " ".join(parser.format_help().split())
        assert expanded in help_out                      # what --help prints ...
        assert expanded in text, f"{action.option_strings or action.dest}: {expanded!r}"
        n += 1                                           # ... is what the page says
    assert n > 30


def test_sanbusd_page_has_every_option(pages):
    text = _rendered(pages["sanbusd.8"])
    parser = man.daemon_parser()
    assert parser.prog == "sanbusd"
    opts = [o for _, os_, _ in _walk(parser, "sanbusd") for o in os_]
    assert "--check-config" in opts and "--config" in opts and "--ready-fd" not in opts
    for o in opts:
        assert o in text, f"{o} is not in sanbusd(8)"
    assert "--ready-fd" not in text               # internal (help=SUPPRESS)
    for var in config.ENVIRONMENT:
        assert var in text
    assert "/usr/libexec/sanbusd" in text and config.CONFIG_FILE in text


def test_conf_page_has_every_key(pages):
    text = _rendered(pages["sanbusd.conf.5"])
    for section, keys in config.FILE_KEYS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"{key} = " in text, f"[{section}] {key} is not in sanbusd.conf(5)"


def test_conf_page_refuses_a_default_file_that_misses_a_key():
    text = (TOP / "data" / "sanbusd.conf").read_text().replace("#parallel_hosts", "#parallel_x")
    with pytest.raises(ValueError, match=r"\[scan\] parallel_hosts"):
        man.conf_page(text)


def test_roff_escaping():
    assert man.esc("--lun") == "\\-\\-lun"
    assert man.esc(".start\n'quote") == "\\&.start\n\\&'quote"
    assert man.esc("a\\b") == "a\\eb"
    assert man.esc("WWID,…") == "WWID,\\[u2026]"


def test_daemon_parser_is_the_daemons_own():
    """The parser the page is made from (taken from daemon.py's source, so that making the pages
    needs no working dbus-fast) accepts exactly what the daemon accepts."""
    from sanbusd import daemon
    parser = man.daemon_parser()
    ours = {o for a in parser._actions for o in a.option_strings}
    argv = ["--polkit-timeout", "7", "--check-config", "-v"]
    assert vars(parser.parse_args(argv)) == vars(daemon.parse_args(argv))
    for opt in ours - {"-h", "--help", "--version"}:
        action = next(a for a in parser._actions if opt in a.option_strings)
        value = [] if action.nargs == 0 else ["1"]
        assert vars(parser.parse_args([opt, *value])) == vars(daemon.parse_args([opt, *value]))
