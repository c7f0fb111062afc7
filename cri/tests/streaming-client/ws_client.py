#!/usr/bin/env python3
"""ws-client: a WebSocket client of berthd's CRI streaming server (python3-websocket).

  ws_client.py exec|attach [options] URL   stdio is the remote command's; the exit code is the
                                           remote one (v4/v5: from the status on channel 3)
  ws_client.py portforward [options] URL   sends --send on the first port's data channel,
                                           prints what comes back until the server closes

Channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; with v5.channel.k8s.io, [255, n]
closes channel n. The base64 protocols send text: a digit for the channel, then base64.
"""
import argparse
import base64
import json
import sys
import threading
import urllib.parse

import websocket


def encode(proto, channel, data):
    if "base64" in proto:
        return websocket.ABNF.OPCODE_TEXT, chr(ord("0") + channel) + base64.b64encode(data).decode()
    return websocket.ABNF.OPCODE_BINARY, bytes([channel]) + data


def decode(proto, opcode, payload):
    if opcode == websocket.ABNF.OPCODE_TEXT or "base64" in proto:
        text = payload.decode() if isinstance(payload, bytes) else payload
        return ord(text[0]) - ord("0"), base64.b64decode(text[1:])
    return payload[0], payload[1:]


def connect(url, proto, query):
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.urlencode(query, doseq=True)
    ws_url = urllib.parse.urlunsplit(("ws", u.netloc, u.path, q or u.query, ""))
    try:
        return websocket.create_connection(ws_url, subprotocols=[proto] if proto else None, timeout=60)
    except websocket.WebSocketBadStatusException as e:
        sys.stderr.write("HTTP %d\n" % e.status_code)
        sys.exit(3)


def messages(ws, proto):
    """(channel, data) until the server closes."""
    while True:
        try:
            opcode, payload = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            return
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return
        if opcode in (websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_TEXT) and payload:
            yield decode(proto, opcode, payload)


def send(ws, proto, channel, data):
    opcode, frame = encode(proto, channel, data)
    ws.send(frame, opcode)


def remote_command(a):
    query = {"command": a.command, "stdin": str(a.stdin).lower(), "stdout": "true",
             "stderr": str(a.stderr).lower(), "tty": str(a.tty).lower()}
    ws = connect(a.url, a.protocol, query)
    if a.protocol and ws.subprotocol != a.protocol:
        sys.exit("negotiated %r" % ws.subprotocol)
    for r in a.resize:
        w, h = r.split("x")
        send(ws, a.protocol, 4, json.dumps({"Width": int(w), "Height": int(h)}).encode())
    if a.stdin:
        def pump():
            data = sys.stdin.buffer.read()
            if data:
                send(ws, a.protocol, 0, data)
            if a.protocol.startswith("v5.") and not a.no_close:
                ws.send(bytes([255, 0]), websocket.ABNF.OPCODE_BINARY)
        threading.Thread(target=pump, daemon=True).start()
    status = b""
    for channel, data in messages(ws, a.protocol):
        if channel == 1:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        elif channel == 2:
            sys.stderr.buffer.write(data)
            sys.stderr.flush()
        elif channel == 3:
            status += data
    ws.close()
    if a.status:
        with open(a.status, "wb") as f:
            f.write(status)
    if not status:
        return 0
    if not (a.protocol.startswith("v4.") or a.protocol.startswith("v5.")):
        sys.stderr.write("error: %s\n" % status.decode())
        return 1
    st = json.loads(status)
    if st["status"] == "Success":
        return 0
    if st.get("reason") == "NonZeroExitCode":
        for c in st["details"]["causes"]:
            if c.get("reason") == "ExitCode":
                return int(c["message"])
    sys.stderr.write("error: %s\n" % st.get("message"))
    return 1


def port_forward(a):
    ws = connect(a.url, a.protocol, {"port": [str(p) for p in a.port]} if a.port else {})
    first = {}
    errors = b""
    if a.send:
        send(ws, a.protocol, 0, a.send.encode())
    for channel, data in messages(ws, a.protocol):
        # Each channel's first message starts with its port (2 bytes, little-endian).
        if channel not in first:
            first[channel] = int.from_bytes(data[:2], "little")
            data = data[2:]
        if channel % 2 == 0:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            errors += data
    ws.close()
    sys.stderr.write("ports: %s\n" % sorted(set(first.values())))
    if errors:
        sys.stderr.write("error: %s\n" % errors.decode())
        return 1
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["exec", "attach", "portforward"])
    p.add_argument("url")
    p.add_argument("--protocol", default="v5.channel.k8s.io")
    p.add_argument("--command", action="append", default=[])
    p.add_argument("--stdin", action="store_true")
    p.add_argument("--no-close", action="store_true", help="v5: no close signal after stdin")
    p.add_argument("--stderr", action="store_true")
    p.add_argument("--tty", action="store_true")
    p.add_argument("--resize", action="append", default=[], help="WxH")
    p.add_argument("--status", help="write what came on the error channel here")
    p.add_argument("--port", type=int, action="append", default=[])
    p.add_argument("--send", default="")
    a = p.parse_args()
    if a.mode == "portforward":
        sys.exit(port_forward(a))
    sys.exit(remote_command(a))


if __name__ == "__main__":
    main()
