"""msnas-graph: MS-NAS search spaces and architectures as graphs (no torch in the core)."""

__version__ = "0.1.0"
