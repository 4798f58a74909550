"""Pure compute: torch functions of specs and tensors. No Ray, no storage."""
