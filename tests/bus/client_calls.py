"""Make D-Bus calls (concurrently) and print what came back, as JSON; run as any test user.

    python client_calls.py ADDRESS CALLS_JSON [CONCURRENCY]

CALLS_JSON is a list of [path, interface, member, signature, body]; in a body,
{"$v": [signature, value]} stands for a Variant. Prints a list of
{"error": name-or-null, "body": ...} in the order of the calls.
"""

import asyncio
import json
import sys

from dbus_fast import Message, MessageType, Variant
from sanbusd.client import connect

TIMEOUT = 50        # s; below run()'s 60 s in sanbus_testing.py


def decode(x):
    if isinstance(x, dict) and set(x) == {"$v"}:
        sig, value = x["$v"]
        return Variant(sig, decode(value))
    if isinstance(x, dict):
        return {k: decode(v) for k, v in x.items()}
    if isinstance(x, list):
        return [decode(v) for v in x]
    return x


def encode(x):
    if isinstance(x, Variant):
        return encode(x.value)
    if isinstance(x, dict):
        return {str(k): encode(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [encode(v) for v in x]
    return x


async def main(address, calls, concurrency):
    bus = await connect(address)
    sem = asyncio.Semaphore(concurrency)

    async def one(spec):
        path, iface, member, sig, body = spec
        async with sem:
            try:        # bounded: the test sees which call got no answer
                reply = await asyncio.wait_for(bus.call(Message(
                    destination="org.example.SanStorage", path=path, interface=iface,
                    member=member, signature=sig, body=decode(body))), TIMEOUT)
            except asyncio.TimeoutError:
                return {"error": f"no answer within {TIMEOUT} s", "body": []}
        if reply.message_type == MessageType.ERROR:
            return {"error": reply.error_name, "body": encode(reply.body)}
        return {"error": None, "body": encode(reply.body)}
    results = await asyncio.gather(*(one(c) for c in calls))
    bus.disconnect()
    print(json.dumps(results))


asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]),
                 int(sys.argv[3]) if len(sys.argv) > 3 else 1))
