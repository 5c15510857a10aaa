#!/usr/bin/env python3
"""A UDP relay with delay and loss, for links this kernel cannot impair (no netem).

Listens on --listen, forwards each datagram of its (latest) client to --to after --delay-ms,
and each answer back to the client likewise; drops a fraction --loss of the datagrams in each
direction, chosen by a seeded generator so a run can be repeated. Prints "PORT n" once bound,
and on SIGTERM one line "RELAYED fwd back dropped".
"""
import argparse
import asyncio
import random
import signal
import socket
import sys


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=addr, default=("127.0.0.1", 0))
    ap.add_argument("--to", type=addr, required=True)
    ap.add_argument("--delay-ms", type=float, default=50.0)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    loop = asyncio.get_running_loop()
    rng = random.Random(a.seed)
    delay = a.delay_ms / 1000.0
    counts = {"fwd": 0, "back": 0, "dropped": 0}
    client = {"addr": None}
    down = {}

    class Up(asyncio.DatagramProtocol):
        def datagram_received(self, data, _src):
            if rng.random() < a.loss:
                counts["dropped"] += 1
                return
            if client["addr"] is not None:
                counts["back"] += 1
                loop.call_later(delay, down["t"].sendto, data, client["addr"])

    up_t, _ = await loop.create_datagram_endpoint(Up, remote_addr=a.to)

    class Down(asyncio.DatagramProtocol):
        def connection_made(self, t):
            down["t"] = t

        def datagram_received(self, data, src):
            client["addr"] = src
            if rng.random() < a.loss:
                counts["dropped"] += 1
                return
            counts["fwd"] += 1
            loop.call_later(delay, up_t.sendto, data)

    t, _ = await loop.create_datagram_endpoint(Down, local_addr=a.listen, family=socket.AF_INET)
    print("PORT", t.get_extra_info("sockname")[1], flush=True)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    loop.add_signal_handler(signal.SIGINT, stop.set_result, None)
    await stop
    print("RELAYED", counts["fwd"], counts["back"], counts["dropped"], flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
