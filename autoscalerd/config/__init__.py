"""Policy files: the pure model, parsing and validation, and the YAML loader (load.py)."""
