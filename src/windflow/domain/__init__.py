"""Pure models and rules. No I/O; safe to import inside workflows."""
