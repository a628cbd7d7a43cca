"""Refinement: recommenders turn findings into proposals with evidence and impact. They never enforce."""
