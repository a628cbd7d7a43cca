"""The human gate: proposals move only through decisions, each one audited. Pure, no enforcement handle."""
