"""The interfaces the stages need from the outside world. Implementations live in adapters/."""
