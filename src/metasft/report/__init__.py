"""The report stage: an experiment directory's results -> report.md, report.html and figures.

Reads files only; never imports metasft.train.
"""
from metasft.report.report import write_report

__all__ = ["write_report"]
