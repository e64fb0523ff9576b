#!/usr/bin/env python3
"""Publish a message to a ClusterWS cluster with a plain Redis PUBLISH.

No dependencies: it encodes the envelope (README, "The Redis wire format")
and speaks RESP over a socket. With the pub/sub driver every node subscribed
to the channel delivers the message to its connections of the target, like
`sender.send` would (at-most-once; no history, no idempotency: use the HTTP
API for those).

    scripts/publish.py --namespace clusterws --uid alice --text "hello"
    scripts/publish.py --room lobby --binary-hex 000102
    scripts/publish.py --all --text "to everyone" --print-hex    # also print the envelope
"""
import argparse
import os
import socket
import struct
import sys


def short(text):
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError("a name over 65,535 bytes")
    return struct.pack(">H", len(data)) + data


def envelope(kind, target, opcode, payload, origin="publisher", origin_epoch=None, sequence=0):
    """Version 2: "CW" | 2 | kind | opcode | origin node | origin epoch u64 | sequence u64 | target | payload."""
    epoch = origin_epoch if origin_epoch is not None else int.from_bytes(os.urandom(8), "big")
    out = b"CW" + bytes([2, kind, opcode]) + short(origin) + struct.pack(">QQ", epoch, sequence)
    if kind in (2, 3):        # user, room: the name
        out += short(target)
    elif kind == 4:           # everyone: no exceptions
        out += struct.pack(">I", 0)
    else:
        raise ValueError("kind must be 2 (user), 3 (room) or 4 (all)")
    return out + struct.pack(">I", len(payload)) + payload


def resp(*parts):
    out = b"*%d\r\n" % len(parts)
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode("utf-8")
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    return out


def command(sock, *parts):
    sock.sendall(resp(*parts))
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        reply += chunk
    if reply.startswith(b"-"):
        raise RuntimeError(reply[1:].decode().strip())
    return reply[1:].decode().strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--password")
    parser.add_argument("--namespace", default="clusterws")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--uid")
    target.add_argument("--room")
    target.add_argument("--all", action="store_true")
    payload = parser.add_mutually_exclusive_group(required=True)
    payload.add_argument("--text")
    payload.add_argument("--binary-hex")
    parser.add_argument("--print-hex", action="store_true", help="print the envelope in hex")
    args = parser.parse_args()

    if args.uid is not None:
        kind, name, channel = 2, args.uid, f"{args.namespace}:user:{args.uid}"
    elif args.room is not None:
        kind, name, channel = 3, args.room, f"{args.namespace}:room:{args.room}"
    else:
        kind, name, channel = 4, "", f"{args.namespace}:all"
    if args.text is not None:
        opcode, data = 1, args.text.encode("utf-8")
    else:
        opcode, data = 2, bytes.fromhex(args.binary_hex)
    message = envelope(kind, name, opcode, data)
    if args.print_hex:
        print(message.hex())
    with socket.create_connection((args.host, args.port), timeout=5) as sock:
        if args.password:
            command(sock, "AUTH", args.password)
        receivers = command(sock, "PUBLISH", channel, message)
    print(f"published to {channel}: {receivers} node(s) subscribed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
