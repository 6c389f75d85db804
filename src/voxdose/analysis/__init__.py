"""From dose maps to numbers: DVHs and structure statistics."""
