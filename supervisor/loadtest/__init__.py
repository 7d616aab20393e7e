"""``supervisor loadtest``: many supervised chat sessions against one server, measured.

Modules, each with one job:

    config, values   options: defaults < config file < environment < flags, validated once
    target           the server: the embedded one in a child process, or a reachable URL
    runner           the run: spawning at a rate, the clock, Ctrl-C, exit statuses
    driver           one session's scenario: connect, chat turns, resumes
    metrics          HDR latency histograms, counters, per-interval series
    report           the report dict (JSON), CSV and HTML
    progress         live progress and the summary table

This package imports nothing heavy at import time: the embedded target's child
process imports it too.
"""

from __future__ import annotations
