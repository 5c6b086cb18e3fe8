"""The canonical store: tables, migrations, connections and bulk reads and writes."""
