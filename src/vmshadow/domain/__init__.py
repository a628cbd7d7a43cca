"""The typed vocabulary of vmshadow. Pure: no I/O, no clocks, no infrastructure."""
