"""Source connectors: each reads one kind of provider and yields a normalised Feed."""
