"""The `vmshadow` command line (Typer + rich), one module per noun."""
