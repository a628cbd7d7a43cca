"""Adapters: the ports implemented over real infrastructure. Only composition roots (`vmshadow.app`) import them."""
