"""The phases of `bench/load_report.py`, by what they put the server through."""
