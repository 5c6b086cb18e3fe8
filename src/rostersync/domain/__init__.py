"""Records, ids and frame schemas shared by every layer; no I/O."""
