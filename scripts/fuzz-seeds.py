#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into Fuzz/Corpus/<target>/.

Seeds are small valid (and a few almost valid) inputs, so the fuzzer starts
from the shapes the decoders accept. Re-run after a format change; the files
are committed, and libFuzzer adds what it finds to a working copy (make fuzz).
"""
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Fuzz", "Corpus")


def short(text):
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def envelope(kind, opcode, fields, payload=b"hi", origin="node-a", epoch=0x1122334455667788, sequence=None):
    """Version 1 without a sequence, version 2 with one."""
    head = bytes([1 if sequence is None else 2, kind, opcode]) + short(origin) + struct.pack(">Q", epoch)
    if sequence is not None:
        head += struct.pack(">Q", sequence)
    return b"CW" + head + fields + struct.pack(">I", len(payload)) + payload


def envelopes():
    yield envelope(1, 1, struct.pack(">QI", 7, 2) + struct.pack(">QQ", 1, 2))
    yield envelope(2, 1, short("alice"))
    yield envelope(3, 2, short("lobby"), payload=bytes(range(256)))
    yield envelope(4, 1, struct.pack(">I", 1) + short("node-b") + struct.pack(">QQ", 9, 3))
    yield envelope(5, 2, struct.pack(">I", 3) + short("a") + short("bé") + short(""))
    yield envelope(2, 1, short("x"))[:-1]  # truncated
    yield b"CW\x01\x05\x01" + short("n") + b"\0" * 8 + b"\xff\xff\xff\xff"  # lying count
    yield envelope(2, 1, short("alice"), sequence=42)
    yield envelope(4, 2, struct.pack(">I", 0), sequence=2**64 - 1)
    yield envelope(2, 1, short("alice"), sequence=7)[:20]  # cut inside the sequence


def mask(payload, key=b"\x37\xfa\x21\x3d"):
    return key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(opcode, payload, fin=True, rsv=0, masked=True):
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    length = len(payload)
    bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([bit | length])
    elif length <= 0xFFFF:
        head += bytes([bit | 126]) + struct.pack(">H", length)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", length)
    return head + (mask(payload) if masked else payload)


def frames():
    yield frame(1, b"hello")
    yield frame(2, bytes(200))
    yield frame(1, b"hel", fin=False) + frame(9, b"ping") + frame(0, b"lo")
    yield frame(9, b"x" * 125) * 3 + frame(10, b"")
    yield frame(8, struct.pack(">H", 1000) + b"bye")
    yield frame(1, b"\xc3\x28")  # invalid UTF-8
    yield frame(1, b"x", masked=False)
    yield frame(1, b"x", rsv=4)
    yield frame(0, b"orphan")
    yield frame(2, bytes(1500))  # over the target's frame limit
    yield frame(8, b"\x03")


def handshakes():
    base = ("GET /ws?uid=a HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
    yield (base + "\r\n").encode()
    yield (base + "Origin: https://ok.example\r\nSec-WebSocket-Protocol: clusterws.v1\r\n\r\n").encode()
    yield base.replace("13", "8").encode() + b"\r\n"
    yield base.replace("dGhlIHNhbXBsZSBub25jZQ==", "nope").encode() + b"\r\n"
    yield b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    yield b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    yield b"GET / HTTP/1.0\r\n\r\n"
    yield b"\x01\x02 NOT HTTP\r\n\r\n"


def bulk(data):
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(items):
    return b"*%d\r\n" % len(items) + b"".join(items)


def resps():
    yield b"+OK\r\n-ERR bad\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*-1\r\n"
    yield array([bulk(b"message"), bulk(b"ns:user:alice"), bulk(envelope(2, 1, short("alice")))])
    yield array([bulk(b"smessage"), bulk(b"ns:node:b"), bulk(b"payload")])
    yield array([bulk(b"pmessage"), bulk(b"ns:*"), bulk(b"ns:all"), bulk(b"x")])
    yield array([bulk(b"sunsubscribe"), bulk(b"ns:room:r"), b":0\r\n"])
    yield array([bulk(b"pong"), bulk(b"")])
    entry = array([bulk(b"1-0"), array([bulk(b"epoch"), bulk(b"00000000000000ff"), bulk(b"env"), bulk(b"x")])])
    yield array([array([bulk(b"ns:queue:a"), array([entry])])])
    yield b"-MOVED 3999 127.0.0.1:6381\r\n-ASK 12 [::1]:7000\r\n"
    yield b"$1000000\r\nshort"  # a bulk that never completes
    yield array([array([b":0\r\n", b":5460\r\n", array([bulk(b"127.0.0.1"), b":7000\r\n", bulk(b"id")]),
                        array([bulk(b"127.0.0.1"), b":7003\r\n"])]),
                 array([b":5461\r\n", b":16383\r\n", array([bulk(b""), b":7001\r\n"])])])  # CLUSTER SLOTS


def fds():
    yield b"server1#9f86d081884c7d65#42"
    yield b"a#b#0000000000000001#0"
    yield b"server1#9F86D081884C7D65#42"
    yield b"server1#9f86d081884c7d65#042"
    yield b"#0000000000000000#1"
    yield b"n#0000000000000000#18446744073709551616"


def main():
    targets = {"envelope": envelopes, "frames": frames, "handshake": handshakes, "resp": resps, "fd": fds}
    for name, make in targets.items():
        folder = os.path.join(ROOT, name)
        os.makedirs(folder, exist_ok=True)
        for index, data in enumerate(make()):
            with open(os.path.join(folder, "seed-%02d" % index), "wb") as handle:
                handle.write(data)
    print("seeds written to", os.path.normpath(ROOT), file=sys.stderr)


if __name__ == "__main__":
    main()
