"""Model registry: architectures (archs.py), published weights (catalog.py), download (hub.py),
building + strict loading (loader.py) and official-checkpoint conversion (convert.py)."""
