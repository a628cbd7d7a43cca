"""Files an operator writes, parsed at the edge into validated domain objects.

`tmr_file` reads a TMR file into a `TMRSet`; `vmn_file` reads a VMN map into a `VMNMap`. Both report every
problem at once as an `InputError` whose issues name the file, line and field, and neither returns anything
half-loaded. `yaml_source` is the YAML reader under both: it keeps the line of every key and list item.

The domain stays free of YAML (an import-linter contract); this package is where YAML meets it.
The format is documented in docs/tmr-format.md.
"""
