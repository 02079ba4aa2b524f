"""The command line (typer + rich). Nothing else in the package imports this."""
