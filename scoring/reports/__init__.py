"""Views of a run: report.json/html, the timeline, compare, explain, progress."""
