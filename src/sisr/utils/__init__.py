"""Small helpers shared by every package: atomic file output, devices, plotting."""
