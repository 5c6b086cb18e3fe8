"""The web app: admin Rostering page, teacher classes, the JSON and extension APIs (docs/web.md)."""
