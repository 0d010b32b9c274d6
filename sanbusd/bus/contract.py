"""The API contract, read from data/org.example.SanStorage.xml.

The daemon serves introspection from this file and checks every call's signature and every
property's type against it, so the documentation cannot drift from what is on the bus.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from dbus_fast.signature import SignatureTree, get_signature_tree

XML_NAME = "org.example.SanStorage.xml"
ACTION_ANNOTATION = "org.example.SanStorage.PolkitAction"


def data_dir() -> Path:
    """Where data/ lives: $SANBUSD_DATA_DIR, the source checkout, or the installed share dir."""
    env = os.environ.get("SANBUSD_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "data", Path("/usr/share/sanbusd")]
    for c in candidates:
        if (c / XML_NAME).is_file():
            return c
    raise FileNotFoundError(f"{XML_NAME} not found in any of {[str(c) for c in candidates]}")


@dataclass(frozen=True, slots=True)
class MethodDef:
    name: str
    in_signature: str
    out_signature: str
    action: str | None              # polkit action id; None for read-only ("none")


@dataclass(frozen=True, slots=True)
class PropertyDef:
    name: str
    signature: str
    tree: SignatureTree
    access: str


@dataclass(slots=True)
class InterfaceDef:
    name: str
    methods: dict[str, MethodDef] = field(default_factory=dict)
    properties: dict[str, PropertyDef] = field(default_factory=dict)
    signals: dict[str, str] = field(default_factory=dict)
    xml: str = ""                   # the <interface> element, for Introspect


@dataclass(slots=True)
class ApiSpec:
    interfaces: dict[str, InterfaceDef]


def _annotation(el: ET.Element, name: str) -> str | None:
    for a in el.findall("annotation"):
        if a.get("name") == name:
            return a.get("value")
    return None


def parse_api(text: str) -> ApiSpec:
    root = ET.fromstring(text)
    interfaces: dict[str, InterfaceDef] = {}
    for iel in root.findall("interface"):
        idef = InterfaceDef(name=iel.get("name", ""))
        for m in iel.findall("method"):
            ins = "".join(a.get("type", "") for a in m.findall("arg")
                          if a.get("direction", "in") == "in")
            outs = "".join(a.get("type", "") for a in m.findall("arg")
                           if a.get("direction") == "out")
            action = _annotation(m, ACTION_ANNOTATION)
            if action is None:
                raise ValueError(f"{idef.name}.{m.get('name')}: no {ACTION_ANNOTATION} "
                                 "annotation (name a polkit action, or \"none\" for reads)")
            idef.methods[m.get("name", "")] = MethodDef(
                m.get("name", ""), ins, outs, None if action == "none" else action)
        for p in iel.findall("property"):
            sig = p.get("type", "")
            idef.properties[p.get("name", "")] = PropertyDef(
                p.get("name", ""), sig, get_signature_tree(sig), p.get("access", "read"))
        for s in iel.findall("signal"):
            idef.signals[s.get("name", "")] = "".join(a.get("type", "")
                                                       for a in s.findall("arg"))
        idef.xml = ET.tostring(iel, encoding="unicode").strip()
        interfaces[idef.name] = idef
    return ApiSpec(interfaces)


@cache
def load_api() -> ApiSpec:
    return parse_api((data_dir() / XML_NAME).read_text())
