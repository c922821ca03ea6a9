"""The front door: FastAPI under /api/v1. It validates, authorizes, then starts/signals/queries workflows."""
