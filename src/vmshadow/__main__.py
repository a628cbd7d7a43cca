"""`python -m vmshadow` is the `vmshadow` command."""

from vmshadow.cli.main import main

main()
