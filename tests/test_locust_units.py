"""The pure parts of supervisor.locust: payloads, the master's ledger, options (no Locust)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import pytest
from support import python_prints

from supervisor.loadtest.config import BY_DEST
from supervisor.loadtest.metrics import LATENCIES
from supervisor.loadtest.values import ConfigError
from supervisor.locust._merged import MergedMetrics
from supervisor.locust._options import REPORTS, SHARED, settings_for
from supervisor.locust._payload import LocalMetrics, decode_histogram, worker_payload

HOST = "http://127.0.0.1:9"


def worker(turns_ms: list[float], seq: int = 0, final: bool = False
           ) -> tuple[LocalMetrics, dict[str, Any]]:
    metrics = LocalMetrics(requested=1)
    metrics.session_started()
    metrics.session_connected("a")
    for millis in turns_ms:
        metrics.record("turn", millis / 1000)
        metrics.count("turns")
    metrics.error("turn_ReplyTimeout")
    return metrics, worker_payload(metrics, seq, final=final, worker_index=0)


class TestMerge:
    """Worker payloads folded into the master's metrics."""

    def test_merged_percentiles_equal_one_histogram_of_all_samples(self) -> None:
        """Two workers' samples merge into exactly the figures of one combined histogram."""
        first, second = [1.0, 2.0, 3.0, 400.0], [5.0, 6.0, 900.0]
        merged = MergedMetrics(requested=2)
        merged.absorb("w1", worker(first)[1])
        merged.absorb("w2", worker(second)[1])
        alone = LocalMetrics(requested=1)
        for millis in first + second:
            alone.record("turn", millis / 1000)
        assert merged.latencies()["turn"] == alone.latencies()["turn"]
        assert merged.latencies()["turn"]["count"] == 7
        assert merged.counts()["turns"] == 7
        assert merged.errors() == {"turn_ReplyTimeout": 2}
        assert merged.session_figures()["started"] == 2
        assert merged.session_figures()["connected_peak"] == 2

    def test_repeated_report_changes_nothing(self) -> None:
        """Totals are cumulative and samples are sent once: a duplicate is ignored."""
        merged = MergedMetrics(requested=1)
        _, payload = worker([10.0, 20.0])
        merged.absorb("w", payload)
        merged.absorb("w", payload)
        assert merged.counts()["turns"] == 2
        assert merged.latencies()["turn"]["count"] == 2

    def test_later_reports_add_only_new_samples(self) -> None:
        """A worker's second report carries the samples since its first, and new totals."""
        metrics, first = worker([10.0])
        metrics.record("turn", 0.03)
        metrics.count("turns")
        second = worker_payload(metrics, 1, final=True, worker_index=0)
        merged = MergedMetrics(requested=1)
        merged.absorb("w", first)
        merged.absorb("w", second)
        assert merged.latencies()["turn"]["count"] == 2
        assert merged.counts()["turns"] == 2
        book = merged.ledger.workers["w"]
        assert (book.final, book.gaps, book.reports) == (True, 0, 2)

    def test_a_missing_report_shows_as_a_gap(self) -> None:
        """Report numbers 0 then 2: one report is counted missing."""
        metrics, first = worker([1.0])
        worker_payload(metrics, 1, final=False, worker_index=0)  # never delivered
        third = worker_payload(metrics, 2, final=False, worker_index=0)
        merged = MergedMetrics(requested=1)
        merged.absorb("w", first)
        merged.absorb("w", third)
        assert merged.ledger.workers["w"].gaps == 1

    @pytest.mark.parametrize("payload", [
        None, "junk", {"v": 99}, {"v": 1}, {"v": 1, "seq": "0"},
    ])
    def test_malformed_payloads_are_counted_not_fatal(self, payload: Any) -> None:
        """Anything that is not our payload is rejected and counted."""
        merged = MergedMetrics(requested=1)
        assert merged.absorb("w", payload) is False
        assert merged.ledger.rejected == 1

    def test_hostile_fields_are_ignored(self) -> None:
        """Bad histograms, negative counts and unknown latency names are dropped."""
        _, payload = worker([1.0])
        payload["histograms"].update({"turn_x": payload["histograms"]["turn"],
                                      "connect": "not-a-histogram"})
        payload["counts"]["turns"] = -5
        merged = MergedMetrics(requested=1)
        assert merged.absorb("w", payload) is True
        assert merged.ledger.rejected == 2
        assert "turns" not in merged.counts()
        assert decode_histogram(b"\x00" * 10) is None
        assert decode_histogram("A" * 3_000_000) is None

    def test_large_error_and_reason_deltas_are_added_whole(self) -> None:
        """250,000 errors and 150,000 reconnects in one report all count, with the message."""
        metrics = LocalMetrics(requested=1)
        metrics.error("turn_ReplyTimeout", "no reply within 30s", n=250_000)
        metrics.reconnect("ConnectionLost", n=150_000)
        merged = MergedMetrics(requested=1)
        merged.absorb("w", worker_payload(metrics, 0, final=True, worker_index=0))
        assert merged.errors() == {"turn_ReplyTimeout": 250_000}
        assert merged.counts()["errors"] == 250_000
        assert merged.reasons() == {"ConnectionLost": 150_000}
        detail = merged.error_details()["turn_ReplyTimeout"]
        assert (detail["count"], detail["message"]) == (250_000, "no reply within 30s")

    def test_error_messages_are_optional_and_checked(self) -> None:
        """No (or a hostile) error_messages: the kind stands in for the sample message."""
        _, payload = worker([1.0])
        del payload["error_messages"]
        merged = MergedMetrics(requested=1)
        merged.absorb("w", payload)
        _, hostile = worker([1.0])
        hostile["error_messages"] = {"turn_ReplyTimeout": 42, 7: "x"}
        merged.absorb("v", hostile)
        detail = merged.error_details()["turn_ReplyTimeout"]
        assert (detail["count"], detail["message"]) == (2, "turn_ReplyTimeout")

    def test_lost_worker_holds_no_connected_sessions(self) -> None:
        """A worker marked lost keeps its totals but no longer counts as connected."""
        merged = MergedMetrics(requested=1)
        merged.absorb("w", worker([1.0])[1])
        assert merged.connected_now() == 1
        merged.ledger.mark_lost("w")
        assert merged.connected_now() == 0
        assert merged.workers()["w"]["lost"] is True

    def test_intervals_hold_merged_percentiles(self) -> None:
        """A rolled interval's turn p50 comes from the samples merged during it."""
        merged = MergedMetrics(requested=1)
        merged.absorb("w", worker([10.0, 20.0, 30.0])[1])
        record = merged.roll()
        assert record["latency_ms"]["turn"]["p50"] == pytest.approx(20.0, rel=2e-3)
        assert record["turns"] == 3
        assert record["active_sessions"] == 1
        assert merged.roll()["latency_ms"]["turn"] == {"p50": None, "p99": None}

    def test_summaries_cover_every_latency(self) -> None:
        """The merged report has every latency name, empty ones as nulls."""
        latencies = MergedMetrics(requested=1).latencies()
        assert set(latencies) == set(LATENCIES)
        assert latencies["turn"]["count"] == 0
        assert latencies["turn"]["p50"] is None


class TestOptions:
    """Locust options named and validated as supervisor loadtest's."""

    def parsed(self, **values: Any) -> argparse.Namespace:
        return argparse.Namespace(num_users=3, spawn_rate=2.0, run_time=5, **values)

    def test_shared_names_are_loadtest_options(self) -> None:
        """Every shared option exists in supervisor loadtest under the same name."""
        for name in SHARED:
            assert BY_DEST[name.replace("-", "_")].name == name
        assert set(REPORTS.values()) <= set(BY_DEST)

    def test_flags_beat_class_options_beat_defaults(self) -> None:
        """Command line > the class's options mapping > the option's default."""
        settings = settings_for("chainlit", {"think_time": 0.5, "message": "hi"},
                                self.parsed(think_time="0.25"), HOST)
        config = settings.config
        assert (config.think_time, config.message, config.turn_timeout) == (0.25, "hi", 30.0)
        assert (config.sessions, config.spawn_rate, config.duration) == (3, 2.0, 5.0)
        assert (config.target, config.protocol, config.runtime) == (HOST, "chainlit", "gevent")

    def test_bad_values_fail_like_loadtest(self) -> None:
        """A bad value raises the loadtest ConfigError, naming the option."""
        with pytest.raises(ConfigError, match="--think-time"):
            settings_for("chainlit", {}, self.parsed(think_time="-1"), HOST)

    def test_unknown_class_options_and_missing_host_are_refused(self) -> None:
        """Typos in ``options`` and a run without --host fail with a fix."""
        with pytest.raises(ConfigError, match="think_tme"):
            settings_for("chainlit", {"think_tme": 1}, None, HOST)
        with pytest.raises(ConfigError, match="--host"):
            settings_for("chainlit", {}, None, None)


class TestProcessesOption:
    """`--processes`: validated with the other options; the default path stays Locust-free."""

    @pytest.mark.parametrize(("value", "expected"), [("1", 1), ("4", 4), ("-1", -1)])
    def test_accepted_values(self, value: str, expected: int) -> None:
        """1 (default), N, and -1 for one per core."""
        from supervisor.cli import build_parser  # noqa: PLC0415
        from supervisor.loadtest.config import resolve  # noqa: PLC0415

        namespace = build_parser().parse_args(["loadtest", "--processes", value])
        assert resolve(namespace, {}).processes == expected

    @pytest.mark.parametrize("value", ["0", "-2", "two"])
    def test_bad_values_are_refused(self, value: str) -> None:
        """0, below -1 and non-numbers fail before anything runs."""
        from supervisor.cli import build_parser  # noqa: PLC0415
        from supervisor.loadtest.config import resolve  # noqa: PLC0415

        namespace = build_parser().parse_args(["loadtest", "--processes", value])
        with pytest.raises(ConfigError, match="--processes"):
            resolve(namespace, {})

    def test_runner_module_imports_neither_locust_nor_gevent(self) -> None:
        """The CLI's process imports the --processes runner without gevent's monkey-patching."""
        code = ("import sys, supervisor.cli, supervisor.locust.processes; "
                "bad = {'locust', 'gevent'} & set(sys.modules); assert not bad, bad")
        python_prints(code)  # fails, with the interpreter's stderr, if the assert does

    def test_one_worker_per_core(self) -> None:
        """-1 means os.cpu_count() workers; other values are taken as they are."""
        from supervisor.locust.processes import worker_count  # noqa: PLC0415

        assert worker_count(-1) == max(1, os.cpu_count() or 1)
        assert worker_count(3) == 3
