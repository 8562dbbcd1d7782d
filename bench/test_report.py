"""Unit tests of the comparison's arithmetic: which rate counts as sustained,
the goal ratios, and the Markdown section replaced in place."""

from pathlib import Path

import report


def point(rate, p99, lost=0, up=10, delivered=None):
    return {
        "rate": rate, "delivered_per_sec": float(rate), "expected": rate * 10,
        "delivered": rate * 10 - lost if delivered is None else delivered, "lost": lost,
        "duplicates": 0, "p50_ms": p99 / 2, "p90_ms": p99 * 0.8, "p99_ms": p99, "max_ms": p99 * 2,
        "sessions_up": up, "sessions_target": 10,
    }


def test_best_rate_is_the_last_sustained_and_says_whether_the_sweep_stopped():
    points = [point(1000, 2.0), point(2000, 10.0), point(4000, 80.0)]
    assert report.best_rate(points, 50.0) == (2000, True)
    assert report.rate_cell(points, 50.0) == "2,000"
    # Every rate sustained: the figure is only a lower bound.
    assert report.best_rate(points[:2], 50.0) == (2000, False)
    assert report.rate_cell(points[:2], 50.0) == "≥ 2,000"


def test_a_loss_or_a_missing_session_is_not_sustained_even_when_fast():
    assert not report.sustained(point(1000, 1.0, lost=1), 50.0)
    assert not report.sustained(point(1000, 1.0, up=9), 50.0)
    assert report.best_rate([point(1000, 1.0, lost=3)], 50.0) == (None, True)
    assert report.rate_cell([point(1000, 1.0, lost=3)], 50.0) == "none sustained"


def results(zkfire_chat, others_chat, memory=(5.0, 40.0, 30.0), same=None, cross=None):
    plan = {"p99_limit_ms": 50.0, "fixed_rate": 1000, "idle_sessions": 10, "chat_accounts": 10,
            "duration_secs": 1, "presence_accounts": 4, "contacts": 2}
    servers = {
        "zkfire": {"label": "zkfire", "idle": {"kib_per_session": memory[0]}, "chat": zkfire_chat},
        "ejabberd": {"label": "ejabberd", "idle": {"kib_per_session": memory[1]}, "chat": others_chat},
        "prosody": {"label": "Prosody", "idle": {"kib_per_session": memory[2]}, "chat": others_chat[:1]},
    }
    if same is not None:
        servers["cluster"] = {"label": "cluster", "chat": cross, "chat_same_node": same}
    return {"plan": plan, "servers": servers, "date": "d", "quick": False, "pinned": True,
            "machine": {"cpu": "x", "cores": 2, "memory_gib": 1, "kernel": "k", "os": "12"}}


def goal_rows(data):
    return {line.split("|")[1].strip(): line for line in report.goals_table(data)[2:]}


def test_goals_compare_with_the_best_other_server():
    data = results(
        zkfire_chat=[point(1000, 1.0), point(4000, 2.0), point(8000, 90.0)],
        others_chat=[point(1000, 4.0), point(2000, 60.0)],
        memory=(7.0, 40.0, 30.0),
    )
    rows = goal_rows(data)
    memory = next(v for k, v in rows.items() if k.startswith("memory"))
    # 7 KiB against the best other, 30 KiB: 0.23, within a quarter.
    assert "0.23" in memory and memory.rstrip(" |").endswith("yes")
    chat = next(v for k, v in rows.items() if k.startswith("chat throughput"))
    # 4,000 against 1,000: four times.
    assert "4.00" in chat and chat.rstrip(" |").endswith("yes")
    p99 = next(v for k, v in rows.items() if k.startswith("p99"))
    assert "0.25" in p99 and p99.rstrip(" |").endswith("yes")


def test_goals_not_met_are_said_so():
    data = results(
        zkfire_chat=[point(1000, 3.0), point(2000, 70.0)],
        others_chat=[point(1000, 4.0), point(2000, 6.0), point(4000, 80.0)],
        memory=(20.0, 40.0, 30.0),
        same=[point(1000, 1.0), point(4000, 2.0), point(8000, 90.0)],
        cross=[point(1000, 1.0), point(2000, 2.0), point(4000, 90.0)],
    )
    rows = goal_rows(data)
    for row in rows.values():
        assert row.rstrip(" |").endswith("no")
    cross = next(v for k, v in rows.items() if k.startswith("cross-node"))
    assert "cost 50%" in cross


def test_markdown_section_is_replaced_and_the_rest_kept(tmp_path: Path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\n## Profiling\nkept\n")
    report.write_markdown(path, f"{report.BEGIN}\nnew\n{report.END}\n")
    text = path.read_text()
    assert "old" not in text and "new" in text
    assert text.startswith("# Benchmarks\n\nintro") and text.endswith("## Profiling\nkept\n")
    # A file without the markers gets the section appended.
    other = tmp_path / "other.md"
    other.write_text("# Other\n")
    report.write_markdown(other, f"{report.BEGIN}\nnew\n{report.END}\n")
    assert other.read_text() == f"# Other\n\n{report.BEGIN}\nnew\n{report.END}\n"


def test_the_whole_section_and_chart_render(tmp_path: Path):
    data = results(
        zkfire_chat=[point(1000, 1.0), point(4000, 2.0)],
        others_chat=[point(1000, 4.0)],
        same=[point(1000, 1.0)], cross=[point(1000, 1.5)],
    )
    text = report.markdown(data, "chart.png")
    assert "| zkfire | 5.0 |" in text and "![chat p99 latency" in text
    report.chart(data, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 1000


def test_a_server_at_the_relays_limit_is_shown_as_a_lower_bound():
    data = results(
        zkfire_chat=[point(1000, 1.0), point(4000, 2.0), point(8000, 90.0)],
        others_chat=[point(1000, 4.0), point(2000, 60.0)],
    )
    data["servers"]["relay"] = {"label": "relay", "chat": [point(1000, 1.0), point(4000, 2.0), point(8000, 70.0)]}
    summary = "\n".join(report.summary_table(data))
    assert "≥ 4,000 (the generator's limit)" in summary
    # The relay's own row is not marked.
    relay_row = next(line for line in report.summary_table(data) if line.startswith("| relay"))
    assert "generator's limit" not in relay_row
    chat = next(v for k, v in goal_rows(data).items() if k.startswith("chat throughput"))
    assert "≥ 4,000 msg/s" in chat and chat.rstrip(" |").endswith("yes")


def test_the_archive_setting_is_said():
    data = results(zkfire_chat=[point(1000, 1.0)], others_chat=[point(1000, 4.0)])
    # Results written before the setting existed had no archive anywhere.
    assert "Message archive (XEP-0313): off on every server" in report.markdown(data, "chart.png")
    data["archive"] = "on"
    data["only"] = "chat"
    data["servers"]["zkfire"]["archive"] = "[mam] enabled = true"
    text = report.markdown(data, "chart.png")
    assert "Message archive (XEP-0313): on, every server archiving every message" in text
    assert "Only the chat scenario was run" in text
    assert "| zkfire |  | [mam] enabled = true |" in text
