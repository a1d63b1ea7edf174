#!/usr/bin/env python3
"""A plain-HTTP proxy in front of the test API server that injects faults.

Usage:
  fault-proxy.py --upstream https://127.0.0.1:PORT --ca DIR/ca.crt --log FILE \
      [--fail 'METHOD PATH' STATUS COUNT [--retry-after SECONDS]]... [--held]
      [--owner-pid PID]

Listens on 127.0.0.1 on a free port and prints that port on stdout (one
line), then forwards every request (method, path and query, headers, body)
to the upstream API server over TLS, verified with --ca, and returns its
answer. A --fail rule answers the first COUNT requests whose method and path
(without the query) are exactly 'METHOD PATH' itself with STATUS and a
Kubernetes Status JSON body, and with `Retry-After: SECONDS` if the rule
has --retry-after; those requests never reach the API server.

With --held the rules are off until `POST /fault-proxy/arm` (answered by the
proxy, never forwarded), so a test can let a client's start-up traffic
through untouched and aim the faults at what comes after.

With --owner-pid the proxy exits once that process is gone, so a test that
dies leaves nothing behind.

Each request is one JSON line in --log, written once it is answered:
  {"t0": <monotonic s, arrival>, "t1": <monotonic s, answer sent>,
   "method": ..., "path": ..., "status": ..., "injected": true|false}

Python standard library only.
"""

import argparse
import http.client
import http.server
import json
import os
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy recomputes.
HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}

REASONS = {
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class Rule:
    def __init__(self, target, status, count):
        method, _, path = target.partition(" ")
        if not method or not path.startswith("/"):
            raise SystemExit(f"--fail wants 'METHOD /path', got {target!r}")
        self.method = method.upper()
        self.path = path
        self.status = status
        self.left = count
        self.retry_after = None


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.rules = args.rules
        self.armed = not args.held
        self.log = open(args.log, "a", buffering=1)
        up = urllib.parse.urlsplit(args.upstream)
        if up.scheme != "https" or not up.hostname or not up.port:
            raise SystemExit(f"--upstream wants https://HOST:PORT, got {args.upstream!r}")
        self.host, self.port = up.hostname, up.port
        self.tls = ssl.create_default_context(cafile=args.ca)

    def take(self, method, path):
        """The rule that answers this request, if any (consumes one use)."""
        with self.lock:
            if not self.armed:
                return None
            for rule in self.rules:
                if rule.left > 0 and rule.method == method and rule.path == path:
                    rule.left -= 1
                    return rule
        return None

    def record(self, entry):
        with self.lock:
            self.log.write(json.dumps(entry) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None  # set in main

    def log_message(self, *_):
        pass  # the JSON log says it all

    def do_any(self):
        t0 = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(self.path).path
        state = self.state
        if self.command == "POST" and path == "/fault-proxy/arm":
            with state.lock:
                state.armed = True
            self.reply(200, [("Content-Type", "text/plain")], b"armed\n")
            return
        rule = state.take(self.command, path)
        if rule is not None:
            status, headers, payload = self.fault(rule)
        else:
            status, headers, payload = self.forward(body)
        self.reply(status, headers, payload)
        state.record(
            {
                "t0": t0,
                "t1": time.monotonic(),
                "method": self.command,
                "path": path,
                "status": status,
                "injected": rule is not None,
            }
        )

    def fault(self, rule):
        reason = REASONS.get(rule.status, "Unknown")
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"injected by fault-proxy: {rule.status} {reason}",
            "reason": reason,
            "code": rule.status,
        }
        headers = [("Content-Type", "application/json")]
        if rule.retry_after is not None:
            headers.append(("Retry-After", str(rule.retry_after)))
        return rule.status, headers, json.dumps(status).encode()

    def forward(self, body):
        state = self.state
        conn = http.client.HTTPSConnection(
            state.host, state.port, context=state.tls, timeout=30
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            res = conn.getresponse()
            payload = res.read()
            kept = [(k, v) for k, v in res.getheaders() if k.lower() not in HOP]
            return res.status, kept, payload
        except OSError as e:
            msg = f"fault-proxy: upstream unreachable: {e}".encode()
            return 502, [("Content-Type", "text/plain")], msg
        finally:
            conn.close()

    def reply(self, status, headers, payload):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--held", action="store_true")
    p.add_argument("--owner-pid", type=int)
    # --fail takes three values and --retry-after applies to the rule before
    # it, which argparse cannot say: split them off by hand.
    rules, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--fail":
            if len(argv[i + 1 : i + 4]) < 3:
                raise SystemExit("--fail wants 'METHOD PATH' STATUS COUNT")
            target, status, count = argv[i + 1 : i + 4]
            rules.append(Rule(target, int(status), int(count)))
            i += 4
        elif argv[i] == "--retry-after":
            if not rules or i + 1 >= len(argv):
                raise SystemExit("--retry-after SECONDS follows a --fail rule")
            rules[-1].retry_after = int(argv[i + 1])
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    args = p.parse_args(rest)
    args.rules = rules
    return args


def watch_owner(pid):
    while os.path.exists(f"/proc/{pid}"):
        time.sleep(1)
    os._exit(0)


def main():
    args = parse(sys.argv[1:])
    Handler.state = State(args)
    server = Server(("127.0.0.1", 0), Handler)
    if args.owner_pid:
        threading.Thread(target=watch_owner, args=(args.owner_pid,), daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
