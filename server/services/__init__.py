"""Data access as keyword-only functions (STYLE.md #4): services flush, the request or the task commits."""
