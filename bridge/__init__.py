"""bridge: AI coding agents on different machines find each other and talk through Redis."""

__version__ = "0.1.0"
