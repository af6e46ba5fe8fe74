#!/usr/bin/env python3
"""Idle keep-alive connections for bench/idle-conns.sh (standard library only).

  idle_conns.py serve PORT
      A tiny HTTP/1.1 keep-alive upstream answering 200 to every request.
  idle_conns.py hold --port P --host H --count N --proto h1|h2 [--tls]
      Opens N connections to 127.0.0.1:P, makes one GET / on each (HTTP/1.1, or HTTP/2
      with prior knowledge / ALPN h2 over TLS), then keeps every connection open and
      idle. Prints one JSON line ({"open": N, "failed": F}) once all are done, then
      waits until stdin closes.

The HTTP/2 side speaks just enough of the protocol for one request: the preface, an
empty SETTINGS, SETTINGS acks, one HEADERS frame with HPACK literals.
"""
import argparse
import asyncio
import json
import ssl
import struct
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"


async def serve(port):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


async def h1_request(reader, writer, host):
    writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    await reader.readexactly(length)
    return status


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(index, value):
    """HPACK literal without indexing, indexed name, plain (non-Huffman) value."""
    value = value.encode()
    assert len(value) < 127
    return bytes([index]) + bytes([len(value)]) + value


async def h2_request(reader, writer, host, tls):
    block = b"\x82" + (b"\x87" if tls else b"\x86") + b"\x84" + literal(0x01, host)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) + frame(1, 0x5, 1, block))
    await writer.drain()
    status = None
    while True:
        head = await reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = await reader.readexactly(length)
        if kind == 4 and not flags & 0x1:
            writer.write(frame(4, 0x1, 0))
            await writer.drain()
        elif kind == 7:
            raise ConnectionError("GOAWAY")
        elif kind == 3 and stream == 1:
            raise ConnectionError("RST_STREAM")
        elif stream == 1 and kind == 1:
            # `:status 200` is static index 8 (0x88), after any table size update.
            status = 200 if b"\x88" in payload[:4] else (status or 0)
            if flags & 0x1:
                return status
        elif stream == 1 and kind == 0 and flags & 0x1:
            return status


async def hold(args):
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"] if args.proto == "h2" else ["http/1.1"])
    gate = asyncio.Semaphore(args.parallel)
    held, failed = [], 0

    async def one():
        nonlocal failed
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", args.port, ssl=ctx, server_hostname=args.host if ctx else None)
                if args.proto == "h2":
                    status = await h2_request(reader, writer, args.host, args.tls)
                else:
                    status = await h1_request(reader, writer, args.host)
                if status != 200:
                    raise ConnectionError(f"status {status}")
                held.append(writer)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as e:
                failed += 1
                if failed <= 3:
                    print(f"idle_conns: {e!r}", file=sys.stderr)

    await asyncio.gather(*(one() for _ in range(args.count)))
    print(json.dumps({"open": len(held), "failed": failed}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in held:
        w.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    h = sub.add_parser("hold")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--host", required=True)
    h.add_argument("--count", type=int, required=True)
    h.add_argument("--proto", choices=["h1", "h2"], default="h1")
    h.add_argument("--tls", action="store_true")
    h.add_argument("--parallel", type=int, default=256)
    args = p.parse_args()
    asyncio.run(serve(args.port) if args.cmd == "serve" else hold(args))


if __name__ == "__main__":
    main()
