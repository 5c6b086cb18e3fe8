"""ClassPilot roster service: keeps rosters in sync with a district's source of truth."""

__version__ = "0.1.0"
