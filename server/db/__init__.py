"""Database layer: typed SQLAlchemy 2 tables, sessions and Alembic migrations."""
