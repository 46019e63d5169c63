"""`edgekit check`: the accuracy and latency regression gate for CI (see docs/check.md).

    baseline.create_baseline(model, data, out)        -> the baseline file's content
    gate.check(model, baseline, ...)                  -> the report (config file, JUnit, summary)
    gate.run_check(model, baseline, thresholds=...)   -> the report alone

Modules: stats (McNemar, Tango, Holm, sample size), evaluation (per-image predictions), latency
(CPU-time ratio to the reference network), instructions (instructions per invoke on an
emulated device), baseline (the file), gate (the criteria), report
(table, JUnit XML, markdown), config (edgekit.yaml / [tool.edgekit.check]).
"""
