"""Command-line tools (also declared as console scripts in setup.py)."""
