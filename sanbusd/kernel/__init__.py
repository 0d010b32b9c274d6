"""Everything that touches the kernel (or the simulated SAN standing in for it): see port.py."""
