"""Runs the same zkfire-bench scenarios against every server, one after another.

For each server: start it, create the accounts by in-band registration,
restart it (so memory is measured from a fresh process that has its
accounts), then idle; restart it again, then a chat rate sweep, a presence
rate sweep, and for the cluster a second chat sweep with both ends on one
node. The generator runs
pinned to one core and the servers to the other (when there are two).

`--archive on` makes every server archive every message (XEP-0313: zkfire's
`[mam]`, Prosody's and ejabberd's mod_mam); the default, `off`, has no
archive anywhere. `--only chat` runs the chat sweep alone (accounts
registered, a restart, the chat sweep), with the archive's size before and
after it.

Results go to a JSON file; `bench/report.py` turns them into BENCHMARKS.md
and the chart. Run it through `bench/compare`, which installs and builds
what it needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from report import sustained
from targets import REPO, Target, archive_description, make_targets

PASSWORD = "bench"


@dataclass
class Plan:
    idle_sessions: int = 10_000
    idle_hold_secs: float = 5.0
    chat_accounts: int = 2_000
    chat_rates: list[int] = field(
        default_factory=lambda: [
            1_000, 2_500, 5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 70_000, 100_000,
        ]
    )
    # The rate whose latencies every server is compared at.
    fixed_rate: int = 1_000
    presence_accounts: int = 500
    contacts: int = 50
    presence_rates: list[int] = field(default_factory=lambda: [20, 50, 100, 200, 400, 800, 1_600])
    duration_secs: float = 10.0
    grace_secs: float = 5.0
    p99_limit_ms: float = 50.0

    @classmethod
    def quick(cls) -> "Plan":
        """Small counts: checks that the whole pipeline works, measures nothing."""
        return cls(
            idle_sessions=200, idle_hold_secs=1.0, chat_accounts=100, chat_rates=[200, 500],
            fixed_rate=200, presence_accounts=20, contacts=4, presence_rates=[10, 20],
            duration_secs=2.0, grace_secs=2.0,
        )


class Generator:
    """Runs zkfire-bench, pinned to its core, and returns its JSON report."""

    def __init__(self, binary: Path, cpus: str | None, outdir: Path):
        self.binary = binary
        self.cpus = cpus
        self.outdir = outdir
        self.runs = 0

    def command(self, scenario: str, addresses: list[str], args: list[str]) -> tuple[list[str], Path]:
        self.runs += 1
        report = self.outdir / f"{self.runs:03d}-{scenario}.json"
        cmd = [
            str(self.binary), scenario, "-a", ",".join(addresses), "--tls", "starttls",
            "--insecure", "--password", PASSWORD, "--json", str(report), "-q", *args,
        ]
        if self.cpus is not None:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        return cmd, report

    def run(self, scenario: str, addresses: list[str], args: list[str], timeout: float = 1800) -> dict:
        cmd, report = self.command(scenario, addresses, args)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if not report.exists():
            raise RuntimeError(f"{' '.join(cmd)} wrote no report (exit {result.returncode}):\n{result.stderr[-3000:]}")
        return json.loads(report.read_text())

    def run_idle(self, target: Target, sessions: int, hold: float) -> tuple[dict, int]:
        """Idle run; returns the report and the server's RSS (KiB) sampled
        while every session was up (at the generator's READY line)."""
        cmd, report = self.command(
            "idle", target.addresses(), ["-n", str(sessions), "--hold-secs", str(hold)]
        )
        rss_up = 0
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
            for line in process.stdout:
                if line.startswith("READY"):
                    # Let the last sessions' presence and roster work settle.
                    time.sleep(min(1.0, hold / 2))
                    rss_up = target.rss_kib()
            process.wait(timeout=600)
            stderr = process.stderr.read()
        if not report.exists():
            raise RuntimeError(f"idle run wrote no report:\n{stderr[-3000:]}")
        return json.loads(report.read_text()), rss_up


def settle(seconds: float = 2.0) -> None:
    """A pause after a run: closing thousands of sessions (offline
    presence, roster look-ups) is work that must not land in the next
    measurement."""
    time.sleep(seconds)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def traffic_point(report: dict) -> dict:
    """The figures of one traffic run that the tables and chart use."""
    traffic = report.get("traffic") or {}
    latency = traffic.get("latency_ms") or {}
    return {
        "rate": traffic.get("target_rate"),
        "delivered_per_sec": traffic.get("delivered_per_sec"),
        "expected": traffic.get("expected_deliveries"),
        "delivered": traffic.get("delivered"),
        "lost": traffic.get("lost"),
        "duplicates": traffic.get("duplicates"),
        "bounced": traffic.get("bounced"),
        "p50_ms": latency.get("p50_ms"),
        "p90_ms": latency.get("p90_ms"),
        "p99_ms": latency.get("p99_ms"),
        "max_ms": latency.get("max_ms"),
        "sessions_up": report["sessions"]["up"],
        "sessions_target": report["sessions"]["target"],
        "errors": report.get("errors"),
        "error_samples": report.get("error_samples", [])[:3],
    }


def sweep(generator: Generator, target: Target, scenario: str, rates: list[int], args: list[str],
          plan: Plan, label: str, archive: bool = False) -> list[dict]:
    """Runs the scenario at rising rates until one is not sustained.
    `archive`: note what the server's archive holds after each rate."""
    points = []
    for rate in rates:
        report = generator.run(
            scenario, target.addresses(),
            [*args, "-r", str(rate), "-d", str(plan.duration_secs), "--grace", str(plan.grace_secs)],
        )
        point = traffic_point(report)
        points.append(point)
        ok = sustained(point, plan.p99_limit_ms)
        log(
            f"  {label} {rate}/s: delivered {point['delivered_per_sec']:.0f}/s, "
            f"p50 {point['p50_ms']} p99 {point['p99_ms']} ms, lost {point['lost']}"
            + ("" if ok else "  <- not sustained")
        )
        settle()
        if archive:
            point["archive_after"] = target.archive_size()
            log(f"    archive after {rate}/s: {point['archive_after']}")
        if not ok:
            break
    return points


def warm_up(generator: Generator, target: Target, scenario: str, args: list[str], rate: int,
            duration: float = 4.0) -> dict:
    """A short run at a low rate before a sweep, so that every account has
    sent and received once: servers that load per-user state lazily (the
    blocklist, the roster, privacy lists) pay for it here, not in the
    first measured rate."""
    report = generator.run(scenario, target.addresses(), [*args, "-r", str(max(rate, 10)), "-d", f"{duration:g}"])
    point = traffic_point(report)
    log(f"  {scenario} warm-up at {point['rate']}/s: p99 {point['p99_ms']} ms, lost {point['lost']}")
    settle()
    return report


def delivered_messages(points: list[dict]) -> int:
    return sum(point.get("delivered") or 0 for point in points)


def measure(target: Target, generator: Generator, plan: Plan, archive: bool = False, only: str = "") -> dict:
    result: dict = {
        "label": target.label,
        "version": target.version(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "archive": archive_description(target.key, archive),
    }
    if only == "chat":
        return measure_chat(target, generator, plan, result)
    accounts = max(plan.idle_sessions, plan.chat_accounts, plan.presence_accounts)
    log(f"{target.label}: starting")
    target.start()
    try:
        register(target, generator, accounts, result)
        target.restart()
        settle()

        rss_before = target.rss_kib()
        report, rss_up = generator.run_idle(target, plan.idle_sessions, plan.idle_hold_secs)
        sessions = report["sessions"]
        result["idle"] = {
            "sessions": sessions["up"],
            "target": sessions["target"],
            "logins_per_sec": sessions["logins_per_sec"],
            "login_p99_ms": sessions["login_ms"].get("p99_ms"),
            "rss_before_kib": rss_before,
            "rss_up_kib": rss_up,
            "kib_per_session": round((rss_up - rss_before) / max(1, sessions["up"]), 2)
            if target.measures_memory else None,
        }
        log(
            f"  idle: {sessions['up']}/{sessions['target']} up, {sessions['logins_per_sec']:.0f} logins/s, "
            f"RSS {rss_before} -> {rss_up} KiB"
        )
        # A fresh process for the traffic scenarios too: what 10,000 logins
        # left behind (a garbage-collected heap to sweep, say) must not
        # weigh on the chat figures.
        target.restart()
        settle()

        chat_args = ["-n", str(plan.chat_accounts)]
        warm_up(generator, target, "chat", chat_args, plan.chat_accounts // 2)
        result["chat"] = sweep(generator, target, "chat", plan.chat_rates, chat_args, plan, "chat")
        if target.key == "cluster":
            target.same_node = True
            result["chat_same_node"] = sweep(
                generator, target, "chat", plan.chat_rates, chat_args, plan, "chat, one node"
            )
            target.same_node = False

        presence_args = [
            "-n", str(plan.presence_accounts), "-k", str(plan.contacts), "--setup-timeout", "900",
        ]
        # The first presence run also makes the rosters (setup over XMPP).
        setup = warm_up(generator, target, "presence", presence_args, plan.presence_accounts // 4)
        result["presence_setup"] = setup.get("setup")
        rosters = (setup.get("setup") or {}).get("rosters_complete", 0)
        if rosters < plan.presence_accounts:
            # Each run would try the whole setup again, to its timeout.
            log(f"  presence: only {rosters}/{plan.presence_accounts} rosters complete; no sweep")
            result["presence"] = []
        else:
            result["presence"] = sweep(
                generator, target, "presence", plan.presence_rates,
                [*presence_args, "--skip-roster-setup"], plan, "presence",
            )
    finally:
        log(f"{target.label}: stopping")
        target.stop()
        target.cleanup()
    return result


def register(target: Target, generator: Generator, accounts: int, result: dict) -> None:
    started = time.monotonic()
    report = generator.run("idle", target.addresses(), ["-n", str(accounts), "--register", "--hold-secs", "0"])
    result["registration"] = {
        "accounts": accounts,
        "registered": report["sessions"]["registered"],
        "existing": report["sessions"]["register_existing"],
        "refused": report["sessions"]["register_refused"],
        "secs": round(time.monotonic() - started, 1),
    }
    log(f"  {accounts} accounts registered in {result['registration']['secs']} s")


def measure_chat(target: Target, generator: Generator, plan: Plan, result: dict) -> dict:
    """The chat sweep alone (`--only chat`), on a fresh process with the
    accounts stored, and what the archive held before and after it."""
    log(f"{target.label}: starting ({result['archive']})")
    target.start()
    try:
        register(target, generator, plan.chat_accounts, result)
        target.restart()
        settle()
        chat_args = ["-n", str(plan.chat_accounts)]
        before = target.archive_size()
        # Not above the sweep's first rate, so that a server whose limit is
        # below the usual warm-up rate does not start the sweep with a
        # backlog; as long as it takes for as many messages as accounts.
        rate = min(plan.chat_accounts // 2, plan.chat_rates[0])
        warm = traffic_point(warm_up(
            generator, target, "chat", chat_args, rate, max(4.0, plan.chat_accounts / max(rate, 10))
        ))
        result["chat_warm_up"] = warm
        result["chat_warm_up"]["archive_after"] = target.archive_size()
        result["chat"] = sweep(generator, target, "chat", plan.chat_rates, chat_args, plan, "chat", True)
        if target.key == "cluster":
            target.same_node = True
            result["chat_same_node"] = sweep(
                generator, target, "chat", plan.chat_rates, chat_args, plan, "chat, one node", True
            )
            target.same_node = False
        # Rows still queued for the database are written within write_wait_ms
        # of their message, or soon after when it was slow: give them time.
        settle(5.0)
        after = target.archive_size()
        delivered = delivered_messages([warm, *result["chat"], *result.get("chat_same_node", [])])
        expected = sum(p.get("expected") or 0 for p in [warm, *result["chat"], *result.get("chat_same_node", [])])
        result["archive_check"] = {"before": before, "after": after, "delivered": delivered, "sent": expected}
        log(f"  archive before {before}, after {after}; {delivered} of {expected} messages delivered")
    finally:
        result["log_tail"] = server_log_tail(target)
        log(f"{target.label}: stopping")
        target.stop()
        target.cleanup()
    return result


def server_log_tail(target: Target, lines: int = 40) -> str:
    """The end of the server's own log, kept in the results (what it said
    under load). zkfire nodes: their log files; the peers: their wrappers'."""
    servers = []
    if hasattr(target, "server"):
        servers = [target.server]
    elif getattr(target, "cluster", None) is not None:
        servers = target.cluster.nodes
    parts = []
    for server in servers:
        try:
            text = server.log_text() if hasattr(server, "log_text") else Path(server.log_path).read_text(errors="replace")
        except (OSError, AttributeError):
            continue
        all_lines = text.splitlines()
        parts.append(f"({len(all_lines)} lines)\n" + "\n".join(all_lines[-lines:]))
    return "\n".join(parts)[-8000:]


def problems(results: dict) -> list[str]:
    """What went wrong in a way that is not about speed: a server that did
    not run, sessions that did not come up, stanzas lost or duplicated at a
    rate the server sustained in time. The quick run (CI) fails on these."""
    found = []
    for key, server in results["servers"].items():
        if "failed" in server:
            found.append(f"{key}: {server['failed'][:300]}")
            continue
        registration = server.get("registration", {})
        if registration.get("refused"):
            found.append(f"{key}: {registration['refused']} registrations refused")
        idle = server.get("idle", {})
        if idle.get("sessions") != idle.get("target"):
            found.append(f"{key}: idle {idle.get('sessions')}/{idle.get('target')} sessions up")
        for field in ("chat", "chat_same_node", "presence"):
            for point in server.get(field, []):
                if point["sessions_up"] != point["sessions_target"] or point["lost"] or point["duplicates"]:
                    found.append(
                        f"{key} {field} at {point['rate']}/s: {point['sessions_up']}/{point['sessions_target']} "
                        f"up, {point['lost']} lost, {point['duplicates']} duplicated {point['error_samples']}"
                    )
    return found


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="relay,zkfire,cluster,ejabberd,prosody",
                        help="comma-separated: relay, zkfire, cluster, ejabberd, prosody")
    parser.add_argument("--quick", action="store_true", help="tiny counts, to check the pipeline")
    parser.add_argument("--zkfire", type=Path, default=REPO / "target" / "release" / "zkfire")
    parser.add_argument("--bench", type=Path, default=REPO / "target" / "release" / "zkfire-bench")
    parser.add_argument("--out", type=Path, required=True, help="results JSON file")
    parser.add_argument("--command", default="", help="the command line, recorded in the results")
    parser.add_argument("--archive", choices=["off", "on"], default="off",
                        help="message archive (XEP-0313) on every server, or on none (default)")
    parser.add_argument("--only", choices=["chat"], default=None,
                        help="run one scenario only: chat (the chat rate sweep)")
    parser.add_argument("--chat-rates", default=None,
                        help="comma-separated chat rates of the sweep instead of the plan's (to look closer)")
    options = parser.parse_args()
    archive = options.archive == "on"

    plan = Plan.quick() if options.quick else Plan()
    if options.chat_rates:
        plan.chat_rates = [int(rate) for rate in options.chat_rates.split(",")]
    # zkfire logs warnings only, not as the test harness's default RUST_LOG
    # would have it; cluster membership events stay (a few lines per node
    # start), as the harness waits for them.
    os.environ["RUST_LOG"] = "warn,zkfire::cluster=info"
    workdir = Path(tempfile.mkdtemp(prefix="zkfire-compare-"))
    os.chmod(workdir, 0o755)
    cpus = None
    if len(os.sched_getaffinity(0)) >= 2:
        # Servers (this process's children) on one core, the generator on another.
        server_cpu, generator_cpu = sorted(os.sched_getaffinity(0))[-1], sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {server_cpu})
        cpus = str(generator_cpu)
        log(f"servers pinned to CPU {server_cpu}, generator to CPU {generator_cpu}")
    reports = workdir / "reports"
    reports.mkdir()
    generator = Generator(options.bench, cpus, reports)
    keys = [key.strip() for key in options.servers.split(",") if key.strip()]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "plan": asdict(plan),
        "quick": options.quick,
        "pinned": cpus is not None,
        "command": options.command,
        "archive": options.archive,
        "only": options.only,
        "servers": {},
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    if options.out.exists() and not options.quick:
        # Running some servers again: the others keep their figures (each
        # server's entry says when it was measured).
        earlier = json.loads(options.out.read_text())
        same_run = (earlier.get("archive", "off"), earlier.get("only")) == (options.archive, options.only)
        if earlier.get("plan") == results["plan"] and same_run:
            results["reruns"] = [*earlier.get("reruns", []), f"{options.command} ({results['date']})"]
            results["date"] = earlier.get("date", results["date"])
            results["command"] = earlier.get("command", options.command)
            results["servers"] = {k: v for k, v in earlier["servers"].items() if k not in keys}
            log(f"keeping the figures of {', '.join(results['servers']) or 'no server'} from {options.out}")
    for target in make_targets(keys, workdir, options.zkfire, options.bench, archive):
        try:
            results["servers"][target.key] = measure(target, generator, plan, archive, options.only or "")
        except Exception as error:  # one server failing must not lose the others' figures
            log(f"{target.label} FAILED: {error}")
            results["servers"][target.key] = {"label": target.label, "failed": str(error)[-2000:]}
        options.out.write_text(json.dumps(results, indent=1))
    log(f"results in {options.out}; generator reports in {reports}")
    found = problems(results)
    for problem in found:
        log(f"problem: {problem}")
    # At full scale a server may lose stanzas past its limit; in the quick
    # run every server must carry every stanza.
    return 1 if found and options.quick else 0


if __name__ == "__main__":
    sys.exit(main())
