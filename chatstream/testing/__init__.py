"""Local protocol servers and test helpers, importable by users for their own tests."""
