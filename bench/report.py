#!/usr/bin/env python3
"""Reads oha's JSON results and renders bench/RESULTS.md for bench/run.sh.

report.py oha FILE LABEL CPU_TICKS CLK_TCK   one tab-separated line of a result
report.py render WORK T_HASH_MS WEBHOOKS EXACTNESS ROUNDS SECS CONNECTIONS   the markdown
"""
import datetime
import json
import os
import statistics
import subprocess
import sys

FIELDS = ["label", "rps", "p50", "p99", "p999", "cpu_us", "ok", "total"]


def oha(path, label, ticks, clk_tck):
    result = json.load(open(path))
    summary = result["summary"]
    percentiles = result.get("latencyPercentiles", {})
    statuses = result.get("statusCodeDistribution", {})
    ok = int(statuses.get("200", 0))
    total = sum(int(count) for count in statuses.values())
    rps = float(summary.get("requestsPerSec") or 0)
    cpu_us = (int(ticks) / int(clk_tck)) * 1e6 / total if total and int(ticks) else 0.0
    ms = lambda key: float(percentiles.get(key) or 0) * 1000
    print("\t".join(str(v) for v in [label, f"{rps:.1f}", f"{ms('p50'):.3f}", f"{ms('p99'):.3f}",
                                     f"{ms('p99.9'):.3f}", f"{cpu_us:.1f}", ok, total]))


def rows(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        values = line.rstrip("\n").split("\t")
        if len(values) == len(FIELDS):
            row = dict(zip(FIELDS, values))
            for key in FIELDS[1:]:
                row[key] = float(row[key])
            out.append(row)
    return out


def median_by_label(items):
    labels = []
    for row in items:
        if row["label"] not in labels:
            labels.append(row["label"])
    merged = {}
    for label in labels:
        group = [row for row in items if row["label"] == label]
        merged[label] = {key: statistics.median(row[key] for row in group) for key in FIELDS[1:]}
    return merged


def command(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return "?"


def render(work, t_hash_ms, webhooks, exactness, rounds, secs, connections):
    workers = os.environ.get("WORKERS", "1")
    throughput = median_by_label(rows(f"{work}/throughput.tsv"))
    fixed = median_by_label(rows(f"{work}/fixed.tsv"))
    login = rows(f"{work}/login.tsv")
    flood = rows(f"{work}/flood.tsv")
    orders = rows(f"{work}/orders.tsv")
    cores = os.cpu_count() or 1
    t_hash = float(t_hash_ms)
    # The service hashes on a thread per core but one (ARGON2_THREADS), leaving a core to the
    # gateway.
    hashing_threads = int(os.environ.get("ARGON2_THREADS") or max(1, cores - 1))
    limit = hashing_threads / (t_hash / 1000) if t_hash else 0
    memory = command(["sh", "-c", "free -h | awk '/Mem:/ {print $2}'"])
    commit = command(["git", "rev-parse", "--short", "HEAD"])
    events_per_sec, failed = (webhooks.split() + ["?", "?"])[:2]
    out = []
    w = out.append
    w("# Benchmark results\n")
    w("Produced by `bench/run.sh`; every figure comes from one run on one machine, arms side by "
      "side. Ratios are the result; absolute numbers are context.\n")
    w(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    w(f"- commit: `{commit}`")
    w(f"- machine: {cores} cores (`nproc`), {memory} memory; load tool, upstream, proxy and "
      "service share these cores")
    w(f"- tools: {command(['oha', '--version'])}, {command(['sh', '-c', 'nginx -v 2>&1'])}"
      .replace("\n", " "))
    w(f"- settings: {rounds} interleaved round(s) of {secs} s per arm, {connections} connections, "
      f"upstream = nginx serving a fixed 1 KiB JSON body; nginx and meterapi with {workers} "
      f"worker(s) each" + ("; the `-wN` arms with N each, as many as cores"
                           if any(label.startswith("gateway-w") for label in throughput) else "")
      + "\n")
    # Every figure that has a target, gathered while the sections below are written.
    targets = []
    targets_at = len(out)
    w("## Throughput (medians over the rounds)\n")
    w("| arm | requests/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/request |")
    w("|---|---:|---:|---:|---:|---:|")
    for label, row in throughput.items():
        w(f"| {label} | {row['rps']:.0f} | {row['p50']:.2f} | {row['p99']:.2f} | "
          f"{row['p999']:.2f} | {row['cpu_us']:.1f} |")
    w("")
    if {"gateway", "nginx", "direct"} <= throughput.keys():
        g, n, d = throughput["gateway"], throughput["nginx"], throughput["direct"]
        share, cpu = g["rps"] / n["rps"], g["cpu_us"] / max(n["cpu_us"], 0.001)
        p99 = g["p99"] / max(n["p99"], 0.001)
        w(f"- gateway / nginx throughput: **{share:.2f}x** (target >= 0.9x; the goal 1.0x)")
        w(f"- gateway / direct throughput: {g['rps'] / d['rps']:.2f}x")
        targets.append(("gateway / nginx throughput", f"{share:.2f}x", ">= 0.9x", share >= 0.9))
        targets.append(("CPU per request, gateway / nginx", f"{cpu:.2f}x", "<= 1.3x", cpu <= 1.3))
        targets.append(("p99 at saturation, gateway / nginx", f"{p99:.2f}x", "<= 2x", p99 <= 2))
        if "gateway+redis" in throughput:
            r = throughput["gateway+redis"]
            redis = r["rps"] / g["rps"]
            w(f"- gateway+redis / nginx throughput: {r['rps'] / n['rps']:.2f}x")
            w(f"- gateway+redis / gateway throughput: **{redis:.2f}x** (target >= 0.8x: limits "
              "shared through Redis cost at most 20 %)")
            targets.append(("gateway+redis / gateway throughput", f"{redis:.2f}x", ">= 0.8x",
                            redis >= 0.8))
        w(f"- CPU per request, gateway / nginx: **{cpu:.2f}x** (target <= 1.3x)")
        w(f"- p99 at saturation, gateway / nginx: **{p99:.2f}x** (target <= 2x)")
        # The same pair with as many workers as cores (`nginx-wN`, `gateway-wN`), when run.
        prefix = "gateway-w"
        all_core = sorted(label[len(prefix):] for label in throughput
                          if label.startswith(prefix) and f"nginx-w{label[len(prefix):]}" in throughput)
        for cores_label in all_core:
            ga, na = throughput[f"gateway-w{cores_label}"], throughput[f"nginx-w{cores_label}"]
            share_all = ga["rps"] / na["rps"]
            cpu_all = ga["cpu_us"] / max(na["cpu_us"], 0.001)
            each = f"{cores_label} workers each"
            w(f"- with {each}: gateway / nginx throughput **{share_all:.2f}x** (target >= 0.9x), "
              f"CPU per request **{cpu_all:.2f}x** (target <= 1.3x)")
            targets.append((f"gateway / nginx throughput, {each}", f"{share_all:.2f}x",
                            ">= 0.9x", share_all >= 0.9))
            targets.append((f"CPU per request, gateway / nginx, {each}", f"{cpu_all:.2f}x",
                            "<= 1.3x", cpu_all <= 1.3))
        w("")
    w("## Latency at a fixed 2,000 requests/s (oha, latency correction on)\n")
    w("| arm | p50 ms | p99 ms | p99.9 ms |")
    w("|---|---:|---:|---:|")
    for label, row in fixed.items():
        w(f"| {label} | {row['p50']:.2f} | {row['p99']:.2f} | {row['p999']:.2f} |")
    if {"gateway", "nginx"} <= fixed.keys():
        added = fixed["gateway"]["p99"] - fixed["nginx"]["p99"]
        w(f"\n- added p99 of the gateway over nginx: **{added:.2f} ms** (target <= 1 ms)\n")
        targets.append(("added p99 over nginx at 2,000 requests/s", f"{added:.2f} ms", "<= 1 ms",
                        added <= 1))
    w("## Exactness after load\n")
    w(f"`{open(f'{work}/exactness.txt').read().strip()}`: **{exactness}** (the credits charged "
      "must equal the successful calls times the cost of 1, and the upstream's own count).\n")
    targets.append(("credits charged = successful calls = upstream hits", exactness, "exact",
                    exactness == "exact"))
    w("## Login against the Argon2id limit\n")
    w(f"- one password check (Argon2id, 19 MiB, t=2, p=1), median in process: {t_hash:.1f} ms; limit = hashing threads "
      f"({hashing_threads}: a core per thread but one is left to the gateway) / t_hash = "
      f"**{limit:.1f} logins/s**\n")
    w("| concurrency | logins/s | share of the limit | p99 ms | answered 200 |")
    w("|---|---:|---:|---:|---:|")
    for row in login:
        share = row["rps"] / limit if limit else 0
        w(f"| {row['label']} | {row['rps']:.1f} | {share:.0%} | {row['p99']:.1f} | "
          f"{int(row['ok'])} of {int(row['total'])} |")
    quiet = next((row for row in flood if row["label"] == "gateway-without-flood"), None)
    for row in flood:
        if row["label"] != "gateway-during-flood":
            continue
        reference = f"; without the flood p99 {quiet['p99']:.2f} ms" if quiet else ""
        w(f"\n- gateway at 500 requests/s during a login flood (16 connections): p99 "
          f"**{row['p99']:.2f} ms** (target < 5 ms), p99.9 {row['p999']:.2f} ms{reference}\n")
        targets.append(("gateway p99 at 500 requests/s during a login flood",
                        f"{row['p99']:.2f} ms", "< 5 ms", row["p99"] < 5))
    w("## Payments\n")
    w(f"- webhook events processed per second (signed, every fifth a redelivery): "
      f"**{events_per_sec}** (failed deliveries: {failed}; target >= 500)")
    targets.append(("webhook events per second", f"{events_per_sec}", ">= 500",
                    float(events_per_sec) >= 500 and int(failed) == 0))
    for row in orders:
        w(f"- orders created per second against a local fake Stripe: **{row['rps']:.1f}** "
          f"(p99 {row['p99']:.1f} ms; {int(row['ok'])} of {int(row['total'])} answered 200)")
    accounts = os.path.join(work, "accounts.tsv")
    if os.path.exists(accounts):
        w("\n## Many accounts (issue 18)\n")
        w("One gateway, 32 connections, every call with the key of an account drawn at random from "
          "N funded accounts, 10 s per N; \"again\" repeats the last N with its accounts loaded. "
          "\"Settled after\": from the end of the load until every successful call was charged "
          "(tick 1 s). \"First call\": mean latency of each key's first call of the pass (the "
          "gateway loads its key and account), \"later calls\": of the others.\n")
        w("| N | requests/s | share of N = 1 | settled after ms | first call ms | later calls ms |")
        w("|---|---:|---:|---:|---:|---:|")
        lags, shares = [], {}
        for line in open(accounts):
            n, rps, share, lag, first_ms, later_ms, ok, other = line.rstrip("\n").split("\t")
            w(f"| {n} | {float(rps):.0f} | {share} | {lag} | {first_ms} | {later_ms} |")
            lags.append(float(lag) if lag != "none" else float("inf"))
            if n.startswith("10000"):
                shares["loaded" if "again" in n else "cold"] = float(share)
        for pass_name, share in shares.items():
            targets.append((f"many accounts: share of N = 1 at N = 10,000, accounts {pass_name}",
                            f"{share:.2f}", ">= 0.70", share >= 0.70))
        if lags:
            targets.append(("many accounts: settled after, worst N", f"{max(lags):.0f} ms",
                            "<= 2,000 ms", max(lags) <= 2000))
        w(f"\n- `{open(os.path.join(work, 'accounts-exactness.txt')).read().strip()}`; targets: "
          "share >= 0.70 at N = 10,000, settled within 2 ticks (2,000 ms) at every N, charged = "
          "successful\n")
    table = ["## Against the targets\n", "| figure | measured | target | met |",
             "|---|---:|---:|:-:|"]
    table += [f"| {name} | {value} | {target} | {'yes' if met else '**no**'} |"
              for name, value, target, met in targets]
    out[targets_at:targets_at] = table + [""]
    w("")
    history = os.path.join(os.path.dirname(os.path.abspath(__file__)), "HISTORY.md")
    if os.path.exists(history):
        w(open(history).read().rstrip())
    print("\n".join(out))


if __name__ == "__main__":
    if sys.argv[1] == "oha":
        oha(*sys.argv[2:6])
    elif sys.argv[1] == "render":
        render(*sys.argv[2:9])
    else:
        sys.exit(__doc__)
