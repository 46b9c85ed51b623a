"""The five components, one module each (the registry lists them)."""
