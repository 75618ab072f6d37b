#!/usr/bin/env python3
"""Runs the registry benchmark's commands interleaved and prints times and ratios.

Input: a JSON file {"runs": N, "groups": [{"title", "target", "target_peer", "setup",
"rows": [{"name", "cmd", "prepare", "server_pid"}]}]}; setup runs once before a group. Each round runs every row of a group once,
in a rotating order, so load from other processes on a shared machine falls on every tool alike.
For each run it records the wall time, the CPU time of the command's own processes (rusage of
the child tree; daemons such as dockerd are not included) and the CPU time the registry server
used meanwhile (from /proc/PID/stat), which shows when the server is the bound.
"""
import json
import os
import statistics
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU seconds (user + system) a process has used so far."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run_once(row):
    if row.get("prepare"):
        subprocess.run(row["prepare"], shell=True, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server0 = proc_cpu(row.get("server_pid"))
    before = os.times()
    t0 = time.monotonic()
    res = subprocess.run(row["cmd"], shell=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    wall = time.monotonic() - t0
    after = os.times()
    server = proc_cpu(row.get("server_pid")) - server0
    if res.returncode != 0:
        sys.exit(f"{row['name']} failed ({res.returncode}): {row['cmd']}\n"
                 f"{res.stderr.decode(errors='replace')[-2000:]}")
    cpu = (after.children_user - before.children_user) + \
          (after.children_system - before.children_system)
    return wall, cpu, server


def main():
    spec = json.load(open(sys.argv[1]))
    runs = spec["runs"]
    for group in spec["groups"]:
        rows = group["rows"]
        print(f"\n== {group['title']} ({runs} rounds, interleaved) ==", flush=True)
        if group.get("setup"):
            subprocess.run(group["setup"], shell=True, check=True, stdout=subprocess.DEVNULL)
        results = {r["name"]: [] for r in rows}
        for i in range(runs):
            order = rows[i % len(rows):] + rows[:i % len(rows)]
            for row in order:
                results[row["name"]].append(run_once(row))
        width = max(len(r["name"]) for r in rows)
        print(f"{'':{width}}  {'mean':>7} {'median':>7} {'min':>7}  {'own CPU':>7}  {'server CPU':>10}")
        stats = {}
        for row in rows:
            walls = [w for w, _, _ in results[row["name"]]]
            cpus = [c for _, c, _ in results[row["name"]]]
            servers = [s for _, _, s in results[row["name"]]]
            stats[row["name"]] = statistics.median(walls)
            print(f"{row['name']:{width}}  {statistics.mean(walls):6.3f}s {statistics.median(walls):6.3f}s "
                  f"{min(walls):6.3f}s  {statistics.mean(cpus):6.3f}s  {statistics.mean(servers):9.3f}s")
        first = rows[0]["name"]
        print(f"ratios (median {first} / median peer); target <= {group['target']} x {group['target_peer']}:")
        for row in rows[1:]:
            ratio = stats[first] / stats[row["name"]]
            mark = ""
            if group["target_peer"] in row["name"]:
                mark = "  target met" if ratio <= group["target"] else "  target NOT met"
            print(f"  vs {row['name']:{width}}  {ratio:5.2f}{mark}")
    with open("/proc/loadavg") as f:
        print(f"\nload average after the run: {f.read().strip()}")


if __name__ == "__main__":
    main()
