#!/usr/bin/env python3
"""A small execwatch policy engine in Python: the stream contract without Rust.

It generates the gRPC stubs from proto/ at start (grpcio-tools), connects to
the agent's Unix socket, and keeps a table of running processes keyed by
pid, exactly as docs/policy-engine.md describes: snapshot entries and execs
go in, exits come out, `snapshot_complete` sweeps what the snapshot did not
list, and `lost` means a resync snapshot follows.

    pip install grpcio grpcio-tools
    python3 docs/examples/python/consumer.py --socket /tmp/execwatch/agent.sock

It runs until the agent ends the stream, Ctrl-C, or --max-seconds. With
--until-comm NAME it exits 0 as soon as a process with that comm runs, or 1
after --max-seconds (30 s by default then). --target names the agent as any
gRPC target instead (unix:///run/execwatch/agent.sock is the same socket).
"""

import argparse
import importlib
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROTO_ROOT = os.path.join(REPO, "proto")
PROTO = "execwatch/v1/execwatch.proto"


def load_stubs(out_dir):
    """Compiles the contract into out_dir and imports the generated modules."""
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(PROTO_ROOT, PROTO),
    ])
    if code != 0:
        sys.exit(f"protoc failed on {PROTO} ({code})")
    sys.path.insert(0, out_dir)
    pb = importlib.import_module("execwatch.v1.execwatch_pb2")
    rpc = importlib.import_module("execwatch.v1.execwatch_pb2_grpc")
    return pb, rpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", default="/run/execwatch/agent.sock")
    parser.add_argument("--target", help="a gRPC target; default unix:SOCKET")
    parser.add_argument("--authority",
                        help="only for older agents, which refuse the socket path as "
                             "the HTTP/2 :authority: pass localhost")
    parser.add_argument("--until-comm", help="exit 0 once a process with this comm runs")
    parser.add_argument("--max-seconds", type=float,
                        help="stop after this long (default: never; 30 with --until-comm)")
    args = parser.parse_args()
    if args.max_seconds is None and args.until_comm:
        args.max_seconds = 30.0

    with tempfile.TemporaryDirectory() as stubs:
        pb, rpc = load_stubs(stubs)
        target = args.target or f"unix:{args.socket}"
        options = [("grpc.default_authority", args.authority)] if args.authority else []
        channel = grpc.insecure_channel(target, options=options)
        stub = rpc.ExecEventsStub(channel)
        stream = stub.Watch(pb.WatchRequest(include_exits=True), timeout=args.max_seconds)
        table = {}  # pid -> (start_ticks, comm)
        listed = None  # pids of the snapshot in progress, if any
        expected_seq = 1
        try:
            for event in stream:
                if event.seq != expected_seq:
                    sys.exit(f"sequence jumped from {expected_seq - 1} to {event.seq}")
                expected_seq += 1
                kind = event.WhichOneof("kind")
                if kind == "existing":
                    p = event.existing
                    listed = listed if listed is not None else set()
                    listed.add(p.pid)
                    table[p.pid] = (p.start_ticks, p.comm)
                elif kind == "exec":
                    p = event.exec
                    table[p.pid] = (p.start_ticks, p.comm)
                    argv = " ".join(p.argv)
                    print(f"exec pid={p.pid} comm={p.comm} argv={argv!r}", flush=True)
                elif kind == "exit":
                    gone = table.pop(event.exit.pid, None)
                    if gone:
                        print(f"exit pid={event.exit.pid} comm={gone[1]}", flush=True)
                elif kind == "snapshot_complete":
                    if listed is not None:
                        for pid in [pid for pid in table if pid not in listed]:
                            del table[pid]
                    listed = None
                    print(f"snapshot_complete processes={event.snapshot_complete.processes} "
                          f"running={len(table)}", flush=True)
                elif kind == "lost":
                    listed = set()  # a resync snapshot follows
                    print(f"lost reason={event.lost.reason!r}", flush=True)
                if args.until_comm and any(c == args.until_comm for _, c in table.values()):
                    print(f"found {args.until_comm}", flush=True)
                    return 0
        except KeyboardInterrupt:
            return 0
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                if args.until_comm:
                    print(f"no {args.until_comm} within {args.max_seconds}s", flush=True)
                    return 1
                print(f"stopped after {args.max_seconds}s", flush=True)
                return 0
            # The agent stopped (UNAVAILABLE) or refused us: a real consumer
            # reconnects and rebuilds its table from the new snapshot.
            print(f"stream ended: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
