"""`edgekit check`: the accuracy and latency regression gate for CI (see docs/check.md).

baseline.create_baseline(model, data, out)     -> the baseline file's content
gate.run_check(model, baseline, data=None, ...) -> the report (pass / warn / fail per criterion)
"""
