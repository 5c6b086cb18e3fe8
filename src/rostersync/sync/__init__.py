"""The sync engine: fetch → stage → diff → resolve → check → apply, one module per stage."""
