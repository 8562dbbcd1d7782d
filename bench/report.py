"""Turns a bench/compare.py results file into tables and a chart.

The tables replace the part of the Markdown file between the markers
`<!-- compare:begin -->` and `<!-- compare:end -->` (the rest of the file,
profiling notes say, is kept); a file without them gets them appended.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BEGIN = "<!-- compare:begin -->"
END = "<!-- compare:end -->"
ORDER = ["zkfire", "cluster", "ejabberd", "prosody", "relay"]
OTHERS = ["ejabberd", "prosody"]
# One colour per server in every panel.
COLOURS = {"zkfire": "C0", "cluster": "C1", "ejabberd": "C2", "prosody": "C3", "relay": "C7"}


def fmt(value, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}{unit}"
    return f"{round(value):,}{unit}"


def sustained(point: dict, limit: float) -> bool:
    """A rate is sustained when every session came up, every stanza was
    delivered and p99 stayed under the limit (compare.py stops its sweeps
    on the same test)."""
    return (
        point.get("sessions_up") == point.get("sessions_target")
        and point.get("lost") == 0
        and point.get("delivered") == point.get("expected")
        and point.get("p99_ms") is not None
        and point["p99_ms"] < limit
    )


def best_rate(points: list[dict], limit: float) -> tuple[int | None, bool]:
    """The highest sustained rate, and whether the sweep stopped above it
    (False: even the highest rate tried was sustained, so the figure is a
    lower bound)."""
    best = None
    for point in points:
        if sustained(point, limit):
            best = point["rate"]
    stopped = bool(points) and not sustained(points[-1], limit)
    return best, stopped


def best_delivered(points: list[dict], limit: float) -> float | None:
    rates = [p["delivered_per_sec"] for p in points if sustained(p, limit)]
    return max(rates) if rates else None


def rate_cell(points: list[dict], limit: float, deliveries: bool = False, ceiling: int | None = None) -> str:
    """The highest sustained rate; `ceiling` is the highest the generator
    sustained against its own relay: a server that reaches it may go
    further than the generator can show."""
    if not points:
        return "not measured"
    best, stopped = best_rate(points, limit)
    if best is None:
        return "none sustained"
    value = best_delivered(points, limit) if deliveries else best
    if ceiling is not None and best >= ceiling:
        return f"≥ {fmt(value)} (the generator's limit)"
    return fmt(value) if stopped else f"≥ {fmt(value)}"


def generator_ceiling(results: dict, field: str) -> int | None:
    """The highest rate the generator sustained against the relay."""
    relay = results["servers"].get("relay")
    if not relay or "failed" in relay:
        return None
    best, stopped = best_rate(relay.get(field, []), results["plan"]["p99_limit_ms"])
    return best if stopped else None


def at_rate(points: list[dict], rate: int) -> dict | None:
    return next((p for p in points if p.get("rate") == rate), None)


def common_rate(results: dict) -> int:
    """The rate the latencies are compared at: the highest chat rate that
    every server (the relay aside) sustained, or the plan's fixed rate when
    that is higher (or none was sustained everywhere)."""
    limit = results["plan"]["p99_limit_ms"]
    bests = [
        best_rate(server.get("chat", []), limit)[0]
        for key, server in results["servers"].items()
        if key != "relay" and "failed" not in server
    ]
    if not bests or any(b is None for b in bests):
        return results["plan"]["fixed_rate"]
    return max(min(bests), results["plan"]["fixed_rate"])


def servers_in_order(results: dict) -> list[tuple[str, dict]]:
    servers = results["servers"]
    return [(key, servers[key]) for key in ORDER if key in servers]


def summary_table(results: dict) -> list[str]:
    plan = results["plan"]
    limit = plan["p99_limit_ms"]
    fixed = common_rate(results)
    lines = [
        f"| server | idle: KiB per session | idle: logins/s | chat: highest msg/s with p99 < {fmt(limit)} ms "
        f"| chat at {fmt(fixed)} msg/s: p50 / p99 ms | presence: highest deliveries/s with p99 < {fmt(limit)} ms |",
        "|---|---|---|---|---|---|",
    ]
    ceilings = {field: generator_ceiling(results, field) for field in ("chat", "presence")}
    for key, server in servers_in_order(results):
        if "failed" in server:
            lines.append(f"| {server['label']} | failed: {server['failed'][:120]} | | | | |")
            continue
        if key == "relay":
            ceilings = {"chat": None, "presence": None}
        idle = server.get("idle", {})
        chat = server.get("chat", [])
        point = at_rate(chat, fixed)
        fixed_cell = f"{fmt(point['p50_ms'], 2)} / {fmt(point['p99_ms'], 2)}" if point else "–"
        lines.append(
            f"| {server['label']} | {fmt(idle.get('kib_per_session'), 1)} | {fmt(idle.get('logins_per_sec'))} "
            f"| {rate_cell(chat, limit, ceiling=ceilings['chat'])} | {fixed_cell} "
            f"| {rate_cell(server.get('presence', []), limit, True, ceilings['presence'])} |"
        )
    return lines


def sweep_table(results: dict, field: str, what: str) -> list[str]:
    lines = [
        f"| server | offered {what}/s | delivered/s | p50 ms | p90 ms | p99 ms | max ms | lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, server in servers_in_order(results):
        for point in server.get(field, []):
            lines.append(
                f"| {server['label']} | {fmt(point['rate'])} | {fmt(point['delivered_per_sec'])} "
                f"| {fmt(point['p50_ms'], 2)} | {fmt(point['p90_ms'], 2)} | {fmt(point['p99_ms'], 2)} "
                f"| {fmt(point['max_ms'], 1)} | {fmt(point['lost'])} |"
            )
    return lines


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def goals_table(results: dict) -> list[str]:
    servers = results["servers"]
    plan = results["plan"]
    limit = plan["p99_limit_ms"]
    ours = servers.get("zkfire", {})
    others = [servers[key] for key in OTHERS if key in servers and "failed" not in servers[key]]
    lines = ["| goal | zkfire | best of ejabberd, Prosody | ratio | met |", "|---|---|---|---|---|"]
    if not ours or "failed" in ours or not others:
        return lines + ["| (needs zkfire and at least one of ejabberd, Prosody) | | | | |"]

    memory = ours.get("idle", {}).get("kib_per_session")
    best_memory = min((o["idle"]["kib_per_session"] for o in others if o.get("idle")), default=None)
    met = memory is not None and best_memory is not None and memory <= best_memory / 4
    lines.append(
        f"| memory per idle session ≤ 1/4 of the best | {fmt(memory, 1)} KiB | {fmt(best_memory, 1)} KiB "
        f"| {ratio(memory, best_memory)} | {'yes' if met else 'no'} |"
    )

    rate, _ = best_rate(ours.get("chat", []), limit)
    best_other = max((best_rate(o.get("chat", []), limit)[0] or 0 for o in others), default=None)
    met = rate is not None and best_other is not None and rate >= 3 * best_other
    ceiling = generator_ceiling(results, "chat")
    bounded = rate is not None and ceiling is not None and rate >= ceiling
    verdict = "yes" if met else ("not shown: zkfire reached the generator's limit" if bounded else "no")
    lines.append(
        f"| chat throughput (p99 < {fmt(limit)} ms) ≥ 3× the best | {'≥ ' if bounded else ''}{fmt(rate)} msg/s "
        f"| {fmt(best_other)} msg/s | {'≥ ' if bounded else ''}{ratio(rate, best_other)} | {verdict} |"
    )

    fixed = common_rate(results)
    point = at_rate(ours.get("chat", []), fixed)
    p99 = point["p99_ms"] if point else None
    other_p99 = [at_rate(o.get("chat", []), fixed) for o in others]
    best_p99 = min((p["p99_ms"] for p in other_p99 if p and p["p99_ms"] is not None), default=None)
    met = p99 is not None and best_p99 is not None and p99 <= best_p99 / 2
    lines.append(
        f"| p99 at {fmt(fixed)} msg/s ≤ half of the best | {fmt(p99, 2)} ms | {fmt(best_p99, 2)} ms "
        f"| {ratio(p99, best_p99)} | {'yes' if met else 'no'} |"
    )

    cluster = servers.get("cluster", {})
    cross, _ = best_rate(cluster.get("chat", []), limit)
    same, _ = best_rate(cluster.get("chat_same_node", []), limit)
    if cross is not None and same:
        cost = 1 - cross / same
        # One node at the generator's limit may go faster: the cost is then a lower bound.
        ceiling = generator_ceiling(results, "chat")
        bound = "≥ " if ceiling is not None and same >= ceiling and cross < same else ""
        lines.append(
            f"| cross-node message costs ≤ 30% of one node's throughput | {fmt(cross)} msg/s across nodes "
            f"| {bound}{fmt(same)} msg/s on one node | cost {bound}{cost:.0%} | {'yes' if cost <= 0.30 else 'no'} |"
        )
    return lines


def cluster_table(results: dict) -> list[str]:
    cluster = results["servers"].get("cluster")
    if not cluster or "failed" in cluster:
        return []
    limit = results["plan"]["p99_limit_ms"]
    fixed = common_rate(results)
    lines = [
        f"| placement | highest msg/s with p99 < {fmt(limit)} ms | p50 / p99 ms at {fmt(fixed)} msg/s |",
        "|---|---|---|",
    ]
    for field, name in (("chat_same_node", "both accounts on node 1"),
                        ("chat", "sender and receiver on different nodes (all 3 used)")):
        points = cluster.get(field, [])
        point = at_rate(points, fixed)
        cell = f"{fmt(point['p50_ms'], 2)} / {fmt(point['p99_ms'], 2)}" if point else "–"
        lines.append(
            f"| {name} | {rate_cell(points, limit, ceiling=generator_ceiling(results, 'chat'))} | {cell} |"
        )
    return lines


def archive_line(results: dict) -> str:
    """The archive setting of the run (results files older than the
    setting had no archive anywhere)."""
    if results.get("archive", "off") == "on":
        text = ("Message archive (XEP-0313): on, every server archiving every message "
                "(`bench/compare --archive on`).")
    else:
        text = "Message archive (XEP-0313): off on every server (`--archive off`, the default)."
    if results.get("only"):
        text += f" Only the {results['only']} scenario was run (`--only {results['only']}`)."
    return text


def markdown(results: dict, chart_name: str) -> str:
    machine = results["machine"]
    plan = results["plan"]
    out = [
        BEGIN,
        f"## Comparison of {results['date']}" + (" (quick run: counts too small to mean anything)" if results.get("quick") else ""),
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Debian {machine['os']}. "
        + ("Every server ran pinned to one core and the generator to the other (taskset). "
           if results.get("pinned") else "Server and generator shared the cores (no pinning). ")
        + "All traffic on loopback, STARTTLS, SCRAM-SHA-1.",
        "",
        f"Reproduce: `{(results.get('command') or 'bench/compare').strip()}` (results file: bench/results/)."
        + "".join(f" Servers measured again afterwards: `{r.strip()}`." for r in results.get("reruns", [])),
        "",
        archive_line(results),
        "",
        "| server | version | message archive | measured |",
        "|---|---|---|---|",
    ]
    for key, server in servers_in_order(results):
        out.append(
            f"| {server['label']} | {server.get('version', '')} | {server.get('archive', '–')} "
            f"| {server.get('measured_at', results['date'])} |"
        )
    out += [
        "",
        f"Scenarios: idle = {fmt(plan['idle_sessions'])} sessions with initial presence (RSS growth of the "
        f"server's process(es) from a fresh start with the accounts stored, divided by the sessions; "
        f"for the cluster the three zkfire processes, not PostgreSQL or ZooKeeper); chat = "
        f"{fmt(plan['chat_accounts'])} accounts in pairs, {fmt(plan['duration_secs'])} s per rate, rates rising "
        f"until one is not sustained (sustained: every message delivered and p99 < {fmt(plan['p99_limit_ms'])} ms); "
        f"presence = {fmt(plan['presence_accounts'])} accounts with {plan['contacts']} contacts each, each change "
        f"delivered to {plan['contacts']} contacts. '≥' means even the highest rate tried was sustained. "
        f"Chat latencies are compared at {fmt(common_rate(results))} msg/s: the highest rate every server "
        f"sustained, but not below {fmt(plan['fixed_rate'])}/s (where one sustained none).",
        "",
        "### Summary",
        "",
        *summary_table(results),
        "",
        "### Against the goals",
        "",
        *goals_table(results),
        "",
        "### Cluster hop",
        "",
        *cluster_table(results),
        "",
        "### Chat: latency against offered load",
        "",
        f"![chat p99 latency against offered load]({chart_name})",
        "",
        *sweep_table(results, "chat", "msg"),
        "",
    ]
    if any(s.get("chat_same_node") for _, s in servers_in_order(results)):
        out += ["Cluster, both accounts of each pair on node 1:", "", *sweep_table(results, "chat_same_node", "msg"), ""]
    out += ["### Presence", "", *sweep_table(results, "presence", "change"), "", END]
    return "\n".join(out) + "\n"


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limit = results["plan"]["p99_limit_ms"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for axis, field, title, xlabel in (
        (axes[0], "chat", "chat: p99 latency", "offered messages/s"),
        (axes[1], "presence", "presence: p99 latency", "presence stanzas delivered/s"),
    ):
        for key, server in servers_in_order(results):
            points = [p for p in server.get(field, []) if p.get("p99_ms") is not None]
            if field == "chat" and key == "cluster":
                same = [p for p in server.get("chat_same_node", []) if p.get("p99_ms") is not None]
                if same:
                    axis.plot([p["rate"] for p in same], [p["p99_ms"] for p in same], marker=".",
                              linestyle=":", color=COLOURS[key], label="zkfire cluster, same node")
            if not points:
                continue
            xs = [p["rate"] if field == "chat" else p["delivered_per_sec"] for p in points]
            axis.plot(xs, [p["p99_ms"] for p in points], marker="o", color=COLOURS[key], label=server["label"])
        axis.axhline(limit, color="grey", linestyle="--", linewidth=1)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("p99 latency, ms")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(f"zkfire-bench, {results['date']}, {results['machine']['cores']} cores")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_markdown(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument("--markdown", type=Path, required=True)
    parser.add_argument("--chart", type=Path, required=True)
    options = parser.parse_args()
    results = json.loads(options.results.read_text())
    chart(results, options.chart)
    try:
        chart_name = options.chart.resolve().relative_to(options.markdown.resolve().parent)
    except ValueError:
        chart_name = options.chart
    write_markdown(options.markdown, markdown(results, str(chart_name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
