#!/usr/bin/env python3
"""Writes the cn_proc seed corpus (fuzz/seeds/cn_proc/) in host byte order.

Each seed is a datagram shaped as the kernel sends it (see the diagram in
src/cn_proc.rs), or one cut or bent the way a short recv or a bad message
would be. Run from anywhere: python3 fuzz/seeds/make_cn_proc_seeds.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cn_proc")

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
FORK, EXEC, COMM, EXIT = 0x1, 0x2, 0x200, 0x80000000


def nlmsghdr(length, typ, seq=7, port=0):
    return struct.pack("=IHHII", length, typ, 0, seq, port)


def event(what, data, seq=7, cpu=1, ts=123456789):
    """nlmsghdr + cn_msg + proc_event with a 24-byte union."""
    data = data.ljust(24, b"\0")
    ev = struct.pack("=IIQ", what, cpu, ts) + data
    cn = struct.pack("=IIIIHH", 1, 1, seq, 0, len(ev), 0) + ev
    return nlmsghdr(16 + len(cn), NLMSG_DONE, seq) + cn


def pids(*v):
    return struct.pack("=%di" % len(v), *v)


exec_ = event(EXEC, pids(4242, 4242))
exit_ = event(EXIT, pids(4242, 4242) + struct.pack("=II", 0x100, 17) + pids(1, 1))
fork = event(FORK, pids(1, 1, 4242, 4242))
comm = event(COMM, pids(4242, 4242) + b"renamed".ljust(16, b"\0"))
ack = event(0, struct.pack("=I", 0))
unknown = event(0x800, b"")
# exec declaring 2 bytes of slack, padded to NLMSG_ALIGN, a NOOP, then an exit
slack = bytearray(exec_ + b"\xcc\xcc")
slack[0:4] = struct.pack("=I", 78)
packed = bytes(slack) + b"\0\0" + nlmsghdr(16, NLMSG_NOOP) + exit_
error = nlmsghdr(36, NLMSG_ERROR) + struct.pack("=i", -1) + nlmsghdr(40, NLMSG_DONE)
overrun = nlmsghdr(16, NLMSG_OVERRUN)
# cn_msg.len one past the message, then a good exec
bad_cn_len = bytearray(exec_)
bad_cn_len[32:34] = struct.pack("=H", 41)

seeds = {
    "exec": exec_,
    "exit": exit_,
    "fork": fork,
    "comm": comm,
    "ack": ack,
    "unknown_what": unknown,
    "exec_noop_exit_packed": packed,
    "netlink_error": error,
    "overrun": overrun,
    "exec_truncated_in_header": exec_[:10],
    "exec_truncated_in_cn_msg": exec_[:30],
    "exec_truncated_in_event": exec_[:60],
    "bad_cn_msg_len_then_exec": bytes(bad_cn_len) + exec_,
    "bare_proc_event_exec": exec_[36:],
}

os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {OUT}")
