"""sanbusd: SAN storage (SCSI hosts, FC ports, LUNs, NPIV vHBAs, multipath) on the D-Bus system bus."""

__version__ = "0.1.0"

BUS_NAME = "org.example.SanStorage"
