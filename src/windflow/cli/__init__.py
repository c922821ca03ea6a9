"""The `windflow` command line (Typer + Rich)."""
