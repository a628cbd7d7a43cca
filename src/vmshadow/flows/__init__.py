"""Flow sources: shadow ports and capture files turned into flow records (nfstream, nDPI inside)."""
