#!/usr/bin/env python3
"""Drives a real relaybox login with an independent Noise implementation (the `noiseprotocol`
package from PyPI), over TCP, against the real relay binary. Only the Noise side lives here:
the Rust test (`tests/noise_interop.rs`) encodes the protobuf messages and checks the answers.

    noise_interop.py xx ADDR DEVICE_PRIVATE_HEX LOGIN_HEX REQUEST_HEX
    noise_interop.py ik ADDR DEVICE_PRIVATE_HEX LOGIN_HEX REQUEST_HEX RELAY_PUBLIC_HEX

Prints `login <hex>` (the relay's LoginResult) and `answer <hex>` (the relay's ServerFrame for
the request, sent as the first transport message). Exits non-zero with a message on stderr if
the relay refuses or anything does not parse.
"""
import socket
import struct
import sys

from noise.connection import Keypair, NoiseConnection

PROLOGUE = b"relaybox/1"
VERSION = 1
PATTERNS = {"xx": (1, b"Noise_XX_25519_ChaChaPoly_BLAKE2s"), "ik": (2, b"Noise_IK_25519_ChaChaPoly_BLAKE2s")}


def send_frame(sock, payload):
    sock.sendall(struct.pack(">H", len(payload)) + payload)


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            sys.exit(f"error: the relay closed the connection after {len(out)} of {n} bytes")
        out += chunk
    return out


def recv_frame(sock):
    (length,) = struct.unpack(">H", recv_exact(sock, 2))
    return recv_exact(sock, length)


def relay_reply(frame):
    """Strips the relay's reply marker: 0x00 = Noise message, 0x01 = plaintext refusal."""
    if frame[:1] == b"\x00":
        return frame[1:]
    if frame[:1] == b"\x01" and len(frame) >= 3:
        (code,) = struct.unpack(">H", frame[1:3])
        sys.exit(f"error: the relay refused the handshake: code {code}: {frame[3:].decode(errors='replace')}")
    sys.exit(f"error: the relay's reply has no marker: {frame[:8].hex()}")


def main():
    if len(sys.argv) < 6 or sys.argv[1] not in PATTERNS:
        sys.exit(__doc__)
    mode, addr, private, login, request = sys.argv[1:6]
    pattern, name = PATTERNS[mode]
    host, port = addr.rsplit(":", 1)
    noise = NoiseConnection.from_name(name)
    noise.set_as_initiator()
    noise.set_prologue(PROLOGUE)
    noise.set_keypair_from_private_bytes(Keypair.STATIC, bytes.fromhex(private))
    if mode == "ik":
        noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, bytes.fromhex(sys.argv[6]))
    noise.start_handshake()
    sock = socket.create_connection((host, int(port)), timeout=20)
    if mode == "xx":
        send_frame(sock, bytes([VERSION, pattern]) + noise.write_message())
        noise.read_message(relay_reply(recv_frame(sock)))
        send_frame(sock, noise.write_message(bytes.fromhex(login)))
        result = noise.decrypt(recv_frame(sock))
    else:
        send_frame(sock, bytes([VERSION, pattern]) + noise.write_message(bytes.fromhex(login)))
        result = noise.read_message(relay_reply(recv_frame(sock)))
    if not noise.handshake_finished:
        sys.exit("error: the handshake did not finish")
    print("login", result.hex(), flush=True)
    send_frame(sock, noise.encrypt(bytes.fromhex(request)))
    print("answer", noise.decrypt(recv_frame(sock)).hex(), flush=True)
    sock.close()


if __name__ == "__main__":
    main()
