"""Small helpers shared by the data, engine and CLI packages."""
