"""The Prefect flows: record a room."""
