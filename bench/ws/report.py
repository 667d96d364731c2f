#!/usr/bin/env python3
"""bench/ws/report.py RESULTS.jsonl [NOTE] — the markdown report of
bench/ws/run.sh: per figure and target the median over the rounds (with
every round's value), and keel's ratio to each peer of the same run."""
import json
import statistics
import sys

TARGETS = {
    "keel": "keel (fanout_service, Bearer JWT)",
    "keel-app": "keel (build/keel, /ws/echo, no auth)",
    "ws": "npm ws",
    "sio": "Socket.IO",
    "kernel": "kernel floor (write(2) loop, no WebSocket)",
}


def load(path):
    rows = {}
    failed = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r.get("failed"):
                failed.append(f"{r['figure']} {r['target']} {r['label']}")
                continue
            rows.setdefault((r["figure"], r["label"]), {}).setdefault(r["target"], []).append(r)
    return rows, failed


def med(rs, key):
    return statistics.median(r["result"][key] for r in rs)


def every(rs, key, fmt):
    return ", ".join(fmt.format(r["result"][key]) for r in rs)


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def main():
    rows, failed = load(sys.argv[1])
    note = sys.argv[2] if len(sys.argv) > 2 else ""
    out = []
    for (fig, label), by in rows.items():
        if fig == "idle":
            out.append(f"### Idle connections: {label}, RSS growth per connection\n")
            out.append("| target | bytes per connection (median) | every round | RSS after, MiB (median) | x keel |")
            out.append("|---|---|---|---|---|")
            k = med(by["keel"], "bytes_per_conn") if "keel" in by else 0
            for t, rs in by.items():
                v = med(rs, "bytes_per_conn")
                out.append(f"| {TARGETS[t]} | {v:.0f} | {every(rs, 'bytes_per_conn', '{:.0f}')} | "
                           f"{med(rs, 'rss_after_kb') / 1024:.1f} | {ratio(v, k)} |")
        elif fig == "fanout":
            out.append(f"### Fan-out: one message to {label} connections, until the last has it\n")
            out.append("| target | p50 ms (median) | p99 ms (median) | p99 every round | p99 / keel's "
                       "| server CPU ms per message (median) | x keel | client CPU ms per message |")
            out.append("|---|---|---|---|---|---|---|---|")
            kc = med(by["keel"], "server_cpu_ms_per_msg") if "keel" in by else 0
            k = med(by["keel"], "p99_ms") if "keel" in by else 0
            for t, rs in by.items():
                p99 = med(rs, "p99_ms")
                sc = med(rs, "server_cpu_ms_per_msg")
                out.append(f"| {TARGETS[t]} | {med(rs, 'p50_ms'):.1f} | {p99:.1f} | "
                           f"{every(rs, 'p99_ms', '{:.1f}')} | {ratio(p99, k)} | {sc:.1f} | {ratio(sc, kc)} | "
                           f"{med(rs, 'client_cpu_ms_per_msg'):.1f} |")
        elif fig == "rate":
            out.append(f"### Sustained broadcast to {label} members\n")
            out.append("| target | messages/s (median) | every round | deliveries/s | keel / target "
                       "| messages per server CPU second (median) | keel / target |")
            out.append("|---|---|---|---|---|---|---|")
            kc = med(by["keel"], "messages_per_server_cpu_s") if "keel" in by else 0
            k = med(by["keel"], "messages_per_s") if "keel" in by else 0
            for t, rs in by.items():
                v = med(rs, "messages_per_s")
                c = med(rs, "messages_per_server_cpu_s")
                out.append(f"| {TARGETS[t]} | {v:.0f} | {every(rs, 'messages_per_s', '{:.0f}')} | "
                           f"{med(rs, 'deliveries_per_s'):.0f} | {ratio(k, v)} | {c:.0f} | {ratio(kc, c)} |")
        elif fig == "echo":
            out.append(f"### Echo, {label}\n")
            out.append("| target | echoes/s (median) | every round | keel / target "
                       "| echoes per server CPU second (median) | keel / target "
                       "| server / client CPU s (median) |")
            out.append("|---|---|---|---|---|---|---|")
            k = med(by["keel"], "echoes_per_s") if "keel" in by else 0
            kc = med(by["keel"], "echoes_per_server_cpu_s") if "keel" in by else 0
            for t, rs in by.items():
                v = med(rs, "echoes_per_s")
                name = "keel (build/keel, /ws/echo)" if t == "keel" else TARGETS[t]
                c = med(rs, "echoes_per_server_cpu_s")
                out.append(f"| {name} | {v:.0f} | {every(rs, 'echoes_per_s', '{:.0f}')} | {ratio(k, v)} "
                           f"| {c:.0f} | {ratio(kc, c)} "
                           f"| {med(rs, 'server_cpu_s'):.2f} / {med(rs, 'client_cpu_s'):.2f} |")
        elif fig == "floor":
            out.append(f"### Kernel floor: write(2) of one 66-byte frame to {label} loopback sockets\n")
            out.append("| target | write loop p50 ms (median) | p99 ms (median) | p99 every round "
                       "| until the receiver has all, p50 / p99 ms (median) "
                       "| writer CPU ms per pass | writer sys share |")
            out.append("|---|---|---|---|---|---|---|")
            for t, rs in by.items():
                out.append(f"| {TARGETS[t]} | {med(rs, 'write_p50_ms'):.1f} | {med(rs, 'write_p99_ms'):.1f} "
                           f"| {every(rs, 'write_p99_ms', '{:.1f}')} "
                           f"| {med(rs, 'delivered_p50_ms'):.1f} / {med(rs, 'delivered_p99_ms'):.1f} "
                           f"| {med(rs, 'writer_cpu_ms_per_pass'):.1f} | {med(rs, 'writer_sys_share'):.2f} |")
        loads = [float(r["load"]) for rs in by.values() for r in rs]
        out.append(f"\nload average (1 min) at the measurements: {min(loads):.1f}-{max(loads):.1f}\n")
    if note:
        out.append(note)
    if failed:
        out.append("\nFAILED: " + "; ".join(failed))
    print("\n".join(out))


if __name__ == "__main__":
    main()
