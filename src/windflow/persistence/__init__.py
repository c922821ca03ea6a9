"""SQLAlchemy 2.0 async store: models, repositories (never commit), engine set-up and Alembic migrations."""
