"""Study reports: statistics over seeds (stats), tables (tables), figures (figures), and one
self-contained HTML file (html). `vitlab report DIR` calls `report_main`."""
from .html import build_report, open_report, render_html, report_main, write_report

__all__ = ["build_report", "open_report", "render_html", "report_main", "write_report"]
