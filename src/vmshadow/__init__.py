"""vmshadow: shadow ports, a shadow analysis engine and reviewed TMR refinement for VMNs."""

__version__ = "0.1.0"
