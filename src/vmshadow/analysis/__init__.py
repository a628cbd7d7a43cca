"""The shadow analysis engine (SAE): detectors that turn flows into findings. It never enforces anything."""
