"""Which D-Bus method runs which handler, under which polkit action: declared next to the code,
checked against the XML contract at start-up, fail closed (as firewalld's decorators are).

Handlers are methods of plain objects (sanbusd/api/); `@method` only marks them. The composition
root (daemon.py) hands the objects it built to `collect`, so nothing registers itself by being
imported, and a method in the XML without a handler, or with a different action, stops the
daemon from starting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .. import errors
from ..bus.contract import ApiSpec

AUTH_NO_USER_INTERACTION = "auth.no_user_interaction"


@dataclass(slots=True)
class Call:
    """What a handler gets besides its arguments: who called, on which object."""
    sender: str
    path: str
    interface: str
    member: str
    options: dict[str, Any]

    @property
    def allow_interaction(self) -> bool:
        return not self.options.get(AUTH_NO_USER_INTERACTION, False)


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Registration:
    interface: str
    member: str
    fn: Handler
    action: str | None              # polkit action; None means declared read-only
    options: dict[str, str]         # allowed option keys -> D-Bus signature
    # Narrow, declared exception to the check (udisks' cancel-job vs cancel-job-other-user):
    # when it answers True for a call (the caller started this job), polkit is not asked.
    exempt: Callable[["Call"], Awaitable[bool]] | None = None


@dataclass(frozen=True, slots=True)
class MethodSpec:
    interface: str
    member: str
    action: str | None
    options: dict[str, str]
    exempt: str | None              # name of a method of the same object: the exemption


def method(interface: str, member: str, *, action: str | None = None, readonly: bool = False,
           options: dict[str, str] | None = None, exempt: str | None = None
           ) -> Callable[[Handler], Handler]:
    """Mark a handler as the implementation of one D-Bus method. It must name its polkit
    `action`, or say `readonly=True`; one or the other, never neither (checked at start-up
    against the XML). `exempt` names a method of the same object that may answer True for a
    call that needs no authorization (the caller cancels their own job)."""
    if (action is None) == (not readonly):
        raise TypeError(f"{interface}.{member}: declare exactly one of action=... or readonly=True")

    def deco(fn: Handler) -> Handler:
        fn.__sanbusd_method__ = MethodSpec(  # type: ignore[attr-defined]
            interface, member, action, dict(options or {}), exempt)
        return fn
    return deco


def declared(*classes: type) -> dict[tuple[str, str], tuple[str, MethodSpec]]:
    """(interface, member) -> (attribute name, declaration) of every @method of these classes."""
    out: dict[tuple[str, str], tuple[str, MethodSpec]] = {}
    for cls in classes:
        for name in dir(cls):
            spec = getattr(getattr(cls, name), "__sanbusd_method__", None)
            if spec is None:
                continue
            key = (spec.interface, spec.member)
            if key in out:
                raise RuntimeError(f"{spec.interface}.{spec.member} is implemented twice")
            out[key] = (name, spec)
    return out


def collect(*handlers: object) -> dict[tuple[str, str], Registration]:
    """The registrations of every @method of these objects (bound to them)."""
    by_class = {type(obj): obj for obj in handlers}
    out: dict[tuple[str, str], Registration] = {}
    for key, (name, spec) in declared(*by_class).items():
        obj = next(o for o in handlers if hasattr(type(o), name)
                   and getattr(getattr(type(o), name), "__sanbusd_method__", None) is spec)
        out[key] = Registration(spec.interface, spec.member, getattr(obj, name), spec.action,
                                spec.options, getattr(obj, spec.exempt) if spec.exempt else None)
    return out


class Authorizer:
    """What the tree asks before a privileged handler runs (authz/polkit.py is the real one)."""

    async def check(self, call: Call, action: str, details: dict[str, str]) -> None:
        raise errors.NotAuthorized("no authorization backend configured")


def check_registrations(api: ApiSpec, registry: dict[tuple[str, str], Registration]
                        ) -> dict[tuple[str, str], Registration]:
    """Fail closed: every method in the XML has an implementation whose declaration (action or
    read-only) matches the XML's annotation, and nothing is implemented that the XML lacks."""
    problems = []
    for iface in api.interfaces.values():
        for m in iface.methods.values():
            reg = registry.get((iface.name, m.name))
            if reg is None:
                problems.append(f"{iface.name}.{m.name} has no implementation")
            elif reg.action != m.action:
                problems.append(f"{iface.name}.{m.name}: code declares action {reg.action!r}, "
                                f"the XML {m.action!r}")
            elif not m.in_signature.endswith("a{sv}"):
                problems.append(f"{iface.name}.{m.name} does not end with a{{sv}} options")
    for (i, m) in registry:
        if i not in api.interfaces or m not in api.interfaces[i].methods:
            problems.append(f"{i}.{m} is implemented but not in the XML")
    if problems:
        raise RuntimeError("refusing to start (fail closed): " + "; ".join(problems))
    return dict(registry)
