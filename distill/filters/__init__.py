"""Filters beyond correctness: readability (per row), dedup, decontamination and selection
(across the corpus), and the report. Every check returns a Verdict with a reason name."""
